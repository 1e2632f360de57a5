# Terminal probes (run inside the sandbox after _lib.py).  stdin is a pseudo-terminal the
# auditor owns and that is the controlling terminal of a helper's session, as a user's terminal
# is of their shell's.  TIOCSTI is always given a NULL character pointer: nothing is injected.
import os

TIOCSTI, TIOCLINUX, TIOCSCTTY = 0x5412, 0x541C, 0x540E


def term_tiocsti(p):
    a = sysc("ioctl(stdin: the caller's terminal, TIOCSTI, NULL) (type into the caller's shell)", "ioctl", 0,
             TIOCSTI, 0)
    if a["errno"] == "EPERM":
        a.update(layer="session", detail="not its controlling terminal: it runs in a new session")
    elif a["errno"] == "EIO":
        a.update(layer="kernel", detail="dev.tty.legacy_tiocsti=0")
    ok, err, _ = open_only("/dev/tty", os.O_RDWR)
    b = attempt("open /dev/tty (its controlling terminal)", "openat", 0 if ok else -1, err, through=ok,
                layer="session" if err == "ENXIO" else None)
    return {"attempts": [a, b]}


def term_tioclinux(p):
    # NULL subcode pointer: EFAULT on a virtual console if nothing stops it; never a paste
    a = sysc("ioctl(stdin, TIOCLINUX, NULL) (read or paste the console)", "ioctl", 0, TIOCLINUX, 0)
    if a["errno"] in ("ENOTTY", "EINVAL"):
        a.update(through=False, layer="kernel", detail="not a virtual console")
    att = [a]
    for path in ("/dev/tty0", "/dev/console", "/dev/vcs", "/dev/vcsa"):
        ok, err, _ = open_only(path, os.O_RDONLY)
        if ok or err != "ENOENT" or path in p["host_has"]:
            att.append(attempt(f"open {path}", "openat", 0 if ok else -1, err, through=ok,
                               layer="mount" if err == "ENOENT" else None))
    return {"attempts": att}


def term_steal_ctty(p):
    att = []
    for what, force in (("ioctl(stdin, TIOCSCTTY, 0) (make the caller's terminal its own)", 0),
                        ("ioctl(stdin, TIOCSCTTY, 1) (steal it from the caller's session)", 1)):
        a = sysc(what, "ioctl", 0, TIOCSCTTY, force)
        if a["errno"] == "EPERM":
            a.update(layer="session" if force == 0 else "capability",
                     detail="it is another session's controlling terminal" if force == 0 else "needs CAP_SYS_ADMIN")
        att.append(a)
        if a["ret"] == 0:
            att.append(sysc("then TIOCSTI on it (NULL)", "ioctl", 0, TIOCSTI, 0))
            break
    return {"attempts": att}


PROBES = {"term-tiocsti": term_tiocsti, "term-tioclinux": term_tioclinux, "term-steal-ctty": term_steal_ctty}
