# Terminal probes (run inside the sandbox after _lib.py).  stdin is a pseudo-terminal the
# auditor owns and that is the controlling terminal of a helper's session, as a user's terminal
# is of their shell's.  TIOCSTI is always given a NULL character pointer: nothing is injected.
# Settings are only ever set to the values the terminal has, and a stop or exclusive mode that
# got through is undone at once (and again by the host's check, jailpy/audit/host.py).
import ctypes
import os

TIOCSTI, TIOCLINUX, TIOCSCTTY = 0x5412, 0x541C, 0x540E
TCGETS, TCSETS, TCSBRK, TCXONC, TCFLSH, TIOCEXCL, TIOCNXCL = 0x5401, 0x5402, 0x5409, 0x540A, 0x540B, 0x540C, 0x540D
TIOCGWINSZ, TIOCSWINSZ = 0x5413, 0x5414
TCOOFF, TCOON, TCIFLUSH = 0, 1, 0


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


def term_stop_output(p):
    a = sysc("ioctl(stdin: the caller's terminal, TCXONC, TCOOFF) (tcflow: stop its output)", "ioctl", 0, TCXONC,
             TCOOFF)
    if a["ret"] == 0:
        raw("ioctl", 0, TCXONC, TCOON)  # got through: let it flow again before anything is written
        a["detail"] = "stopped the terminal's output (flowing again at once)"
    return {"attempts": [a]}


def term_change_settings(p):
    # Only values the terminal already has are set (TCSETS, TIOCSWINSZ): nothing changes even
    # where the call gets through; TCFLSH drops typed-ahead input (there is none: the pty is the
    # auditor's); a break on a pty does nothing; exclusive mode is cleared again at once.
    att = []
    attrs = ctypes.create_string_buffer(64)  # struct termios (36 bytes in the kernel)
    if raw("ioctl", 0, TCGETS, attrs)[0] == 0:
        att.append(sysc("ioctl(stdin, TCSETS, its own attributes) (tcsetattr: raw mode, no echo... stay after the "
                        "run)", "ioctl", 0, TCSETS, attrs))
    size = ctypes.create_string_buffer(8)
    if raw("ioctl", 0, TIOCGWINSZ, size)[0] == 0:
        att.append(sysc("ioctl(stdin, TIOCSWINSZ, its own size) (SIGWINCH to the caller's foreground)", "ioctl", 0,
                        TIOCSWINSZ, size))
    att.append(sysc("ioctl(stdin, TCFLSH, TCIFLUSH) (tcflush: drop what the caller typed ahead)", "ioctl", 0, TCFLSH,
                    TCIFLUSH))
    att.append(sysc("ioctl(stdin, TCSBRK, 0) (tcsendbreak: on a serial console, the magic SysRq key)", "ioctl", 0,
                    TCSBRK, 0))
    a = sysc("ioctl(stdin, TIOCEXCL) (exclusive mode: the caller's next open of its terminal fails)", "ioctl", 0,
             TIOCEXCL, 0)
    if a["ret"] == 0:
        raw("ioctl", 0, TIOCNXCL, 0)
    att.append(a)
    return {"attempts": att}


PROBES = {"term-tiocsti": term_tiocsti, "term-tioclinux": term_tioclinux, "term-steal-ctty": term_steal_ctty,
          "term-stop-output": term_stop_output, "term-change-settings": term_change_settings}
