"""The ``jailpy`` command: parse flags, call the API, print.  No kernel logic here.

Exit status: the program's own; 128+N when a signal N killed it; 126 cannot execute;
127 not found; 125 jailpy's own error (one line on stderr saying why).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import TYPE_CHECKING, Annotated, Optional

import click
import typer

from .cli_text import clean, one_line
from .errors import fd_exhausted

if TYPE_CHECKING:
    from . import hostfiles

_APP_SETTINGS = dict(
    name="jailpy",
    help="Run an untrusted program in a sandbox: it sees a read-only copy of this machine, no network, "
    "no other processes and none of your private files, and has no privileges.  No root needed.  "
    "With --image it sees a container image's files instead (jailpy exec --image docker-archive:img.tar -- CMD).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app = typer.Typer(**_APP_SETTINGS)
_exec_app = typer.Typer(**_APP_SETTINGS)
"""Only ``exec``: what `jailpy exec ...` builds, so its start-up does not pay for every command's options."""

_exit_code = 0


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"jailpy {__version__}")
        raise typer.Exit()


@_exec_app.callback()
@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
        help="Print jailpy's version and exit.")] = False,
) -> None:
    """Run an untrusted program in a sandbox (see: jailpy exec --help)."""

FS = "Filesystem"
PROC = "Program"
NET = "Network"
OUT = "Limits and report"


_EXEC_SETTINGS = dict(
    context_settings={"allow_interspersed_args": False},
    help="Run COMMAND [ARGS]... in a new sandbox and exit with its exit status.\n\n"
    "Example: jailpy exec -- python3 untrusted.py\n\n"
    "Put -- before the command so its own options are not read as jailpy's.",
)


@_exec_app.command("exec", **_EXEC_SETTINGS)
@app.command("exec", **_EXEC_SETTINGS)
def exec_(
    command: Annotated[Optional[list[str]], typer.Argument(help="The program and its arguments (with --image: "
        "default the image's Entrypoint and Cmd).", show_default=False)] = None,
    policy: Annotated[Optional[str], typer.Option("--policy", "-p", metavar="NAME|PATH",
        help="Start from this policy (a name from policies/, or a TOML file). Flags override it.")] = None,
    rootfs: Annotated[Optional[str], typer.Option(metavar="DIR", rich_help_panel=FS,
        help="Use DIR as the (read-only) root filesystem instead of this machine's /.")] = None,
    image: Annotated[Optional[str], typer.Option(metavar="REF", rich_help_panel=FS,
        help="Use a container image as the (read-only) root instead: oci:DIR[:TAG] (an OCI image layout, e.g. from "
             "skopeo copy) or docker-archive:FILE (from docker save or podman save). Its layers are checked and "
             "unpacked once into jailpy's store (jailpy image ls); its Env, WorkingDir and User apply unless you "
             "override them, and with no COMMAND its Entrypoint and Cmd run. No registry is contacted.")] = None,
    no_cwd: Annotated[bool, typer.Option("--no-cwd", rich_help_panel=FS,
        help="Do not bind the current directory (read-only) into the sandbox.")] = False,
    bind: Annotated[Optional[list[str]], typer.Option(metavar="SRC[:DST[:ro|rw]]", rich_help_panel=FS,
        help="Make host path SRC visible and WRITABLE at DST (default: the same path; SRC::ro for the same path "
             "read-only), or read-only with :ro, as docker -v. Repeatable.")] = None,
    ro_bind: Annotated[Optional[list[str]], typer.Option(metavar="SRC[:DST[:ro]]", rich_help_panel=FS,
        help="Make host path SRC visible read-only at DST (default: the same path). Repeatable.")] = None,
    workdir: Annotated[Optional[str], typer.Option(metavar="DIR", rich_help_panel=FS,
        help="Start the program in DIR, a path inside the sandbox (default: the current directory when it is "
             "bound, else /).")] = None,
    tmpfs: Annotated[Optional[list[str]], typer.Option(metavar="DST[:SIZE]", rich_help_panel=FS,
        help="An empty writable directory at DST (not /, nor under /proc or /dev), in memory, capped at SIZE "
             "(default 64M). Repeatable.")] = None,
    tmp_size: Annotated[Optional[str], typer.Option(metavar="SIZE", rich_help_panel=FS,
        help="Size cap of the writable /tmp and /dev/shm, e.g. 256M.")] = None,
    hostname: Annotated[Optional[str], typer.Option(rich_help_panel=PROC,
        help="Host name the program sees (default: jailpy).")] = None,
    env: Annotated[Optional[list[str]], typer.Option(metavar="NAME=VALUE", rich_help_panel=PROC,
        help="Set an environment variable. The environment starts clean (PATH, HOME, LANG, TERM). Repeatable.")] = None,
    env_pass: Annotated[Optional[list[str]], typer.Option(metavar="NAME", rich_help_panel=PROC,
        help="Pass your variable NAME through to the program. Repeatable.")] = None,
    pass_fd: Annotated[Optional[list[int]], typer.Option(metavar="N", rich_help_panel=PROC,
        help="Keep your open file descriptor N open in the program (all but 0, 1, 2 are closed).")] = None,
    uid: Annotated[Optional[int], typer.Option(rich_help_panel=PROC,
        help="User id inside the sandbox (default 0: a 'root' with no power outside).")] = None,
    gid: Annotated[Optional[int], typer.Option(rich_help_panel=PROC, help="Group id inside the sandbox.")] = None,
    id_map: Annotated[Optional[str], typer.Option(metavar="auto|single|range", rich_help_panel=PROC,
        help="How sandbox ids map to host ids: range gives each sandbox two ids of your /etc/subuid range "
        "(via newuidmap) no other running sandbox has, so the program owns none of your files; single maps one "
        "id (your own, unless jailpy runs as root); auto picks range when you have one.")] = None,
    network: Annotated[Optional[str], typer.Option(metavar="MODE", rich_help_panel=NET,
        help="none (default: only a private loopback), user (its own network through pasta or slirp4netns; "
             "rootless), bridge (a veth on jailpy's bridge; root), or bridge:NAME (a named network: "
             "jailpy network create).")] = None,
    allow_host: Annotated[Optional[list[str]], typer.Option(metavar="NAME[:PORT]", rich_help_panel=NET,
        help="Let the program connect (TCP) to host NAME, e.g. pypi.org:443 or *.example.org (ports 80 and 443 "
             "when none is given), through jailpy's proxy, with any --network mode. Everything else is refused. "
             "Repeatable.")] = None,
    allow_net: Annotated[Optional[list[str]], typer.Option(metavar="CIDR[:PORT]", rich_help_panel=NET,
        help="Let the program connect to these addresses, e.g. 192.0.2.0/24:5432 (also what lets an allowed "
             "name resolve to a private or loopback address). Repeatable.")] = None,
    publish: Annotated[Optional[list[str]], typer.Option(metavar="[HOSTIP:]HOSTPORT:PORT[/tcp|udp]", rich_help_panel=NET,
        help="Make the sandbox's PORT reachable at HOSTIP:HOSTPORT on this machine (HOSTIP 127.0.0.1 unless given; "
             "any --network mode): jailpy relays each connection, or with /udp each client's datagrams, to "
             "127.0.0.1:PORT inside. Repeatable.")] = None,
    resolver: Annotated[Optional[str], typer.Option(metavar="IP[:PORT]", rich_help_panel=NET,
        help="The DNS server jailpy's proxy asks for allowed names (default: this machine's resolver).")] = None,
    wall_time: Annotated[Optional[float], typer.Option(metavar="SECONDS", rich_help_panel=OUT,
        help="Kill the whole sandbox after this many seconds of real time (verdict WLE). Default: 3600.")] = None,
    cpu_time: Annotated[Optional[float], typer.Option(metavar="SECONDS", rich_help_panel=OUT,
        help="Kill the whole sandbox once all its processes together used this much CPU time (verdict TLE).")] = None,
    memory: Annotated[Optional[str], typer.Option(metavar="SIZE", rich_help_panel=OUT,
        help="Memory all its processes together may use, e.g. 256M; no swap. Over it the kernel kills (verdict MLE).")] = None,
    pids: Annotated[Optional[int], typer.Option(metavar="N", rich_help_panel=OUT,
        help="At most N processes and threads at once (stops fork bombs).")] = None,
    cpus: Annotated[Optional[float], typer.Option(metavar="FLOAT", rich_help_panel=OUT,
        help="CPU bandwidth, in CPUs: 0.5 is half of one CPU.")] = None,
    cpuset: Annotated[Optional[str], typer.Option(metavar="LIST", rich_help_panel=OUT,
        help="Run only on these CPUs, e.g. 0 or 0-1,3.")] = None,
    cpu_weight: Annotated[Optional[int], typer.Option(metavar="N", rich_help_panel=OUT,
        help="CPU priority 1-10000 (default 100): its share of busy CPUs relative to other sandboxes "
             "(weight 300 gets three times what 100 gets).")] = None,
    io_read_bps: Annotated[Optional[str], typer.Option(metavar="SIZE", rich_help_panel=OUT,
        help="Disk reads per second (e.g. 10M) on the disks of the paths it can write (--bind).")] = None,
    io_write_bps: Annotated[Optional[str], typer.Option(metavar="SIZE", rich_help_panel=OUT,
        help="Disk writes per second on those disks (direct and synchronous writes; see README).")] = None,
    io_read_iops: Annotated[Optional[int], typer.Option(metavar="N", rich_help_panel=OUT,
        help="Disk read operations per second on those disks.")] = None,
    io_write_iops: Annotated[Optional[int], typer.Option(metavar="N", rich_help_panel=OUT,
        help="Disk write operations per second on those disks.")] = None,
    io_weight: Annotated[Optional[int], typer.Option(metavar="N", rich_help_panel=OUT,
        help="Disk IO priority 1-10000 (needs the BFQ scheduler or blk-iocost).")] = None,
    output_limit: Annotated[Optional[str], typer.Option(metavar="SIZE", rich_help_panel=OUT,
        help="At most SIZE bytes on stdout and on stderr each; more kills the sandbox (verdict OLE).")] = None,
    fsize: Annotated[Optional[str], typer.Option(metavar="SIZE", rich_help_panel=OUT,
        help="Largest file a process may write (RLIMIT_FSIZE).")] = None,
    nofile: Annotated[Optional[int], typer.Option(metavar="N", rich_help_panel=OUT,
        help="Open files per process (RLIMIT_NOFILE).")] = None,
    stack: Annotated[Optional[str], typer.Option(metavar="SIZE", rich_help_panel=OUT,
        help="Stack size per process (RLIMIT_STACK).")] = None,
    cgroup_parent: Annotated[Optional[str], typer.Option(metavar="PATH", rich_help_panel=OUT,
        help="Make the sandbox's cgroup under this cgroup path, e.g. /judge: one an administrator created and "
        "gave to you (chown). Default: $JAILPY_CGROUP_PARENT, or /jailpy as root.")] = None,
    no_cgroup: Annotated[bool, typer.Option("--no-cgroup", rich_help_panel=OUT,
        help="Use no cgroup: then --memory, --pids, --cpus, --cpuset and --cpu-time are refused.")] = False,
    seccomp: Annotated[Optional[str], typer.Option(metavar="NAME|PATH|none", rich_help_panel=PROC,
        help="Which system calls are denied: default (the kernel's attack surface), strict (only what "
        "programs need to compute: for judges), a TOML or OCI JSON file, or none.")] = None,
    seccomp_log: Annotated[bool, typer.Option("--seccomp-log", rich_help_panel=PROC,
        help="Deny nothing, but list every call the seccomp policy would deny (to write a policy).")] = False,
    landlock: Annotated[Optional[str], typer.Option(metavar="auto|on|off", rich_help_panel=PROC,
        help="Landlock, a second wall behind the mounts (the kernel refuses files the sandbox's plan does not "
        "grant, even if a mount were wrong): auto (default) where the kernel has it, on (or fail), off.")] = None,
    apparmor: Annotated[Optional[str], typer.Option(metavar="PROFILE|generate|off", rich_help_panel=PROC,
        help="Run the program under an AppArmor profile: a loaded profile's name, or generate (the profile derived "
        "from this policy: jailpy apparmor generate; loaded by sudo jailpy apparmor install). Default: off.")] = None,
    selinux_label: Annotated[Optional[str], typer.Option(metavar="LABEL|auto|off", rich_help_panel=PROC,
        help="Run the program under an SELinux context USER:ROLE:TYPE (each run gets two random MCS categories), "
        "or auto (container_t, else jailpy_t: sudo jailpy selinux install). Default: off.")] = None,
    allow_nesting: Annotated[bool, typer.Option("--allow-nesting", rich_help_panel=PROC,
        help="Let the program run a sandbox of its own (a nested jailpy, bwrap, a container): allows its "
             "namespace and mount calls and 64 user namespaces. Off by default.")] = False,
    name: Annotated[Optional[str], typer.Option(metavar="NAME", rich_help_panel=OUT,
        help="Name the sandbox while it runs, for jailpy ps, pause, resume and kill.")] = None,
    stats: Annotated[bool, typer.Option("--stats", rich_help_panel=OUT,
        help="Print a short table of the result (verdict, times, memory) on stderr at the end.")] = False,
    report: Annotated[Optional[str], typer.Option(metavar="PATH|-", rich_help_panel=OUT,
        help="Write the result as JSON (verdict, exit code, times, active protections) to PATH, or - for stderr. "
             "PATH is replaced (never written through); it may not be in a directory the sandbox can write.")] = None,
) -> None:
    global _exit_code
    forwarder = _Forwarder()
    from . import policy as policy_mod
    from .errors import HostError, JailpyError
    from .sandbox import Sandbox

    report_file = None
    try:
        pol = policy_mod.load(policy or "default")
        changes = {k: v for k, v in {
            "rootfs": rootfs, "image": image, "workdir": workdir, "bind": bind, "ro_bind": ro_bind, "tmpfs": tmpfs, "tmp_size": tmp_size,
            "hostname": hostname, "env": env, "env_pass": env_pass, "pass_fd": pass_fd, "uid": uid, "gid": gid,
            "id_map": id_map, "network": network, "wall_time": wall_time, "cpu_time": cpu_time, "memory": memory,
            "pids": pids, "cpus": cpus, "cpuset": cpuset, "cpu_weight": cpu_weight,
            "io_read_bps": io_read_bps, "io_write_bps": io_write_bps, "io_read_iops": io_read_iops,
            "io_write_iops": io_write_iops, "io_weight": io_weight, "output_limit": output_limit, "fsize": fsize, "nofile": nofile,
            "stack": stack, "cgroup_parent": cgroup_parent, "seccomp": seccomp, "allow_host": allow_host,
            "allow_net": allow_net, "publish": publish, "resolver": resolver,
            "landlock": landlock, "apparmor": apparmor, "selinux_label": selinux_label,
        }.items() if v is not None}
        for flag, key in ((no_cwd, "cwd"), (no_cgroup, "no_cgroup"), (seccomp_log, "seccomp_log"),
                          (allow_nesting, "allow_nesting")):
            if flag:
                changes[key] = key != "cwd"
        if changes:
            pol = pol.replace(**changes)
        if report is not None and report != "-":
            report_file = _open_report(report, pol)
    except JailpyError as e:
        if report is not None:  # no stale report from an earlier run may stay
            _write_xx(report, e, None)
        raise
    try:
        try:
            sandbox = Sandbox(pol, reuse_userns=False, name=name)  # one run: a new user namespace costs less than a reusable one
            for warning in sandbox.warnings:
                print(f"jailpy: warning: {one_line(warning)}", file=sys.stderr)
            forwarder.attach(sandbox)
            try:
                # the report is written as soon as the program is done, output still on its way
                # to a reader that is slow (or stopped) is written after it (wait_output below)
                result = sandbox.run(command or [], wait_output=False)
                forwarder.finish()
            finally:
                sandbox.close()  # reap jailpy's helpers and remove the cgroup
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            raise HostError(fd_exhausted(e)) from None
    except JailpyError as e:
        if report is not None:  # a judge reading the report learns that jailpy, not the program, failed
            _write_xx(report, e, pol.digest(), report_file)
        raise
    except BaseException:
        if report_file is not None:
            report_file.discard()
        raise
    if result.error:
        print(f"jailpy: {one_line(result.error)}", file=sys.stderr)
    _print_setid(result.setid_strip)
    if result.seccomp_log is not None:
        _print_seccomp_log(result.seccomp_log)
    if stats:
        _print_stats(result)
    if report == "-":
        sys.stderr.buffer.write(result.to_json() + b"\n")
        sys.stderr.flush()
    elif report_file is not None:
        try:
            report_file.commit(result.to_json() + b"\n")
        except OSError as e:
            raise HostError(f"--report: cannot write {report}: {e.strerror} (the program ran and exited "
                            f"{result.exit_code})") from None
    _exit_code = result.exit_code
    sandbox.wait_output()  # a signal now ends jailpy at once (_Forwarder.finish)


def _open_report(path: str, pol) -> "hostfiles.AtomicFile":
    """Check and prepare the --report file before the run (see hostfiles.AtomicFile): refused
    (PolicyError) when its directory is one the sandbox can write (a writable bind of it or of a
    directory above it, or a directory passed with --pass-fd: a forged report, or a symlink planted
    in place of it, would be read after the run), or when the way to it goes through a symlink of
    another user (a sandbox's, planted in an earlier run)."""
    from . import hostfiles
    from .errors import PolicyError
    from .policy import parse_bind

    head = os.path.dirname(path) or "."
    foreign = hostfiles.foreign_symlink(head)
    if foreign:
        raise PolicyError(f"--report: the way to {path} goes through {foreign}: give a path without it")
    try:
        st, dst = os.lstat(path), os.stat(head)
    except OSError:
        pass
    else:  # what rename(2) would refuse after the run: refused before it
        if stat.S_ISDIR(st.st_mode):
            raise PolicyError(f"--report: {path} is a directory")
        if dst.st_mode & stat.S_ISVTX and os.geteuid() not in (st.st_uid, dst.st_uid):
            raise PolicyError(f"--report: {path} belongs to uid {st.st_uid}, in a sticky directory (like /tmp) "
                              f"where only its owner may replace it")
    try:
        f = hostfiles.AtomicFile(path)
    except OSError as e:
        if e.errno in (errno.EMFILE, errno.ENFILE):
            raise PolicyError(f"--report: cannot write {path}: {fd_exhausted(e)}") from None
        raise PolicyError(f"--report: cannot write {path}: {e.strerror}") from None
    try:
        above = hostfiles.ancestors(f.dirfd)
        writable = [(f"--bind {spec}", src) for spec in pol.bind for src, _, rw in [parse_bind(spec)] if rw]
        writable += [(f"--pass-fd {fd}", f"/proc/self/fd/{fd}") for fd in pol.pass_fd]
        for what, src in writable:
            try:
                st = os.stat(src)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in above:
                raise PolicyError(f"--report: {path} is in {f.directory}, which the sandbox can write ({what}): "
                                  f"it could forge the report or plant a link there; write the report elsewhere")
    except BaseException:
        f.discard()
        raise
    return f


def _write_xx(report: str, err: Exception, policy_hash: str | None, f=None) -> None:
    """Write a Result with verdict XX (jailpy failed) to ``report`` (a path, or - for stderr),
    through ``f`` (the run's AtomicFile) or a new AtomicFile: never written through a link."""
    from . import __version__, hostfiles
    from .result import Result, Verdict

    data = Result(verdict=Verdict.XX, exit_code=125, error=str(err), jailpy_version=__version__,
                  policy_hash=policy_hash or "").to_json() + b"\n"
    if report == "-":
        sys.stderr.buffer.write(data)
        sys.stderr.flush()
        return
    try:
        if f is None:
            if hostfiles.foreign_symlink(os.path.dirname(report) or "."):
                return
            f = hostfiles.AtomicFile(report)
        f.commit(data)
    except OSError:
        pass  # the error itself is reported on stderr


def _print_setid(found: dict | None) -> None:
    """Say on stderr what the check of the writable binds after the run did (jailpy.setid)."""
    if not found:
        return
    if found["cleared_count"]:
        shown = " ".join(found["cleared"][:5]) + (" ..." if found["cleared_count"] > 5 else "")
        print(one_line(f"jailpy: warning: cleared the setuid/setgid bits the program set on "
                       f"{found['cleared_count']} file(s) in writable binds: {shown}"), file=sys.stderr)
    if not found["complete"]:
        print(one_line(f"jailpy: warning: the writable binds were not checked in full for setuid/setgid files: "
                       f"{found['detail']} (their ids are not given to another sandbox until a check finishes)"),
              file=sys.stderr)


def _print_seccomp_log(entries: list[dict]) -> None:
    if not entries:
        print("jailpy: seccomp log: the policy would have denied nothing", file=sys.stderr)
        return
    print(f"jailpy: seccomp log: the policy would have denied {len(entries)} distinct call(s):", file=sys.stderr)
    for e in entries:
        times = f" (x{e['count']})" if e.get("count", 1) > 1 else ""
        print(f"  {e['text']}{times}", file=sys.stderr)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _network_rows(n: dict | None) -> list[tuple[str, str]]:
    """The --stats lines of a Result's ``network`` section."""
    if not n:
        return []
    rows = []
    if n.get("address"):
        rows.append(("address", n["address"]))
    rows.append(("connections", f"{n['connections_allowed']} allowed, {n['connections_refused']} refused; "
                                f"{_size(n['bytes_sent'])} sent, {_size(n['bytes_received'])} received"))
    if n.get("published_connections"):
        rows.append(("published", f"{n['published_connections']} connection(s) or UDP client(s) in through --publish"))
    refused = [f"{e['target']}" + (f":{e['port']}" if e.get("port") else "") for e in n["refused"]]
    if refused:
        rows.append(("refused", clean(", ".join(refused[:5]) + (" ..." if len(refused) > 5 else ""))))
    if n["dns_refused"]:
        names = n["dns_refused"]
        rows.append(("names refused", clean(", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))))
    return rows


def _print_stats(r) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="jailpy", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    rows = [
        ("verdict", f"{r.verdict.value}" + (f" ({r.limit_fired})" if r.limit_fired else "")),
        ("exit code", str(r.exit_code) + (f" (signal {r.signal})" if r.signal else "")),
        ("wall time", f"{r.wall_s:.3f} s"),
        ("cpu time", f"{r.cpu_user_s:.3f} s user, {r.cpu_sys_s:.3f} s system"),
        ("memory peak", _size(r.memory_peak_bytes) + (" (OOM kill)" if r.oom_killed else "")),
        ("processes peak", "-" if r.pids_peak is None else str(r.pids_peak)),
        ("stdout", "-" if r.stdout_bytes is None else _size(r.stdout_bytes) + (" (truncated)" if r.stdout_truncated else "")),
        ("stderr", "-" if r.stderr_bytes is None else _size(r.stderr_bytes) + (" (truncated)" if r.stderr_truncated else "")),
    ]
    rows += _network_rows(r.network)
    if r.blocked_syscall:
        b = r.blocked_syscall
        rows.append(("blocked", f"{b['text']}" + (f" (x{b['count']})" if b.get("count", 1) > 1 else "")))
    for k, v in rows:
        t.add_row(k, escape(v))  # names and targets the program chose: text, never rich markup
    Console(stderr=True, highlight=False).print(t)


@app.command("ps", help="List the named sandboxes running as you (jailpy exec --name NAME), with what they use now.")
def ps(json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    import json
    import time

    from . import cgroups, registry
    from .errors import JailpyError
    rows = []
    for e in registry.entries():
        try:
            live = cgroups.Cgroup.from_paths(e.cgroup).live()
        except (OSError, JailpyError):
            live = {}
        if "pids" in live:  # the program's processes, not jailpy's set-up process and PID 1
            live["pids"] = max(0, live["pids"] - e.jailpy_pids)
        rows.append({"name": e.name, "pid": e.supervisor_pid, "running_s": round(time.time() - e.started, 1),
                     "command": e.argv, **live})
    if json_out:
        print(json.dumps(clean(rows), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    from rich.markup import escape
    from rich.text import Text

    heads = ("NAME", "PID", "STATE", "RUNNING", "CPU", "MEMORY", "PIDS")
    cells = [[r["name"], str(r["pid"]), r.get("state", "?"), f"{r['running_s']:.1f} s",
              f"{r['cpu_s']:.2f} s" if "cpu_s" in r else "-", _size(r.get("memory_bytes")),
              str(r.get("pids", "-"))] for r in rows]
    console = Console(highlight=False)
    # one line per sandbox: the other columns whole, the command cut (…) to what is left of the width
    used = sum(max([len(h)] + [len(c[i]) for c in cells]) + 2 for i, h in enumerate(heads))
    t = Table(box=None)
    for col in heads:
        t.add_column(col, no_wrap=True)
    t.add_column("COMMAND", no_wrap=True, overflow="ellipsis", max_width=max(12, console.width - used - 2))
    for r, c in zip(rows, cells):  # a program's arguments are text, never rich markup ("[/]" broke ps)
        t.add_row(escape(c[0]), *c[1:], Text(one_line(" ".join(r["command"]))[:200]))
    console.print(t)


def _control(name: str, action: str) -> None:
    from . import cgroups, registry
    from .errors import HostError

    e = registry.lookup(name)
    cg = cgroups.Cgroup.from_paths(e.cgroup)
    try:
        getattr(cg, action)()
    except FileNotFoundError:
        if action == "kill":
            return  # it died and jailpy removed its cgroup while we were killing it: done
        raise HostError(f"sandbox {name!r} ended meanwhile") from None
    except OSError as err:
        raise HostError(f"cannot {action} sandbox {name!r} ({', '.join(e.cgroup)}): {err.strerror}") from None


@app.command("pause", help="Freeze every process of the named sandbox (they use no CPU until resumed).")
def pause(name: Annotated[str, typer.Argument(help="The sandbox's --name.")]) -> None:
    _control(name, "freeze")


@app.command("resume", help="Let the processes of a paused sandbox run again.")
def resume(name: Annotated[str, typer.Argument(help="The sandbox's --name.")]) -> None:
    _control(name, "thaw")


@app.command("kill", help="Kill every process of the named sandbox now (its jailpy exec then exits with 137).")
def kill(name: Annotated[str, typer.Argument(help="The sandbox's --name.")]) -> None:
    _control(name, "kill")


_registered = False


def _register_subcommands() -> None:
    """Add the sub-commands beyond ``exec`` and the small ones above to ``app`` (once): their
    modules cost ``jailpy exec``, which never needs them, several milliseconds to import."""
    global _registered
    if _registered:
        return
    _registered = True
    from .cli_seccomp import seccomp_app

    app.add_typer(seccomp_app, name="seccomp")

    from .cli_lsm import apparmor_app, selinux_app

    app.add_typer(apparmor_app, name="apparmor")
    app.add_typer(selinux_app, name="selinux")

    from .cli_net import network_app

    app.add_typer(network_app, name="network")

    from .cli_image import image_app

    app.add_typer(image_app, name="image")

    from .cli_audit import audit_command

    from .cli_judge import judge_command, serve_command, worker_command

    app.command("judge", help="Judge a submission: compile SOURCE and run it on every test of PROBLEM_DIR, each in a "
                "sandbox (exit 0 accepted, 1 any other verdict, 125 jailpy's own error).")(judge_command)

    app.command("serve", help="Serve the judge machine's HTTP API (docs/api.md) on 127.0.0.1:5050: /v1/run, "
                "go-judge's /run, /v1/judge, /v1/files, /v1/health, /metrics.")(serve_command)

    app.command("worker", help="Run jobs (a /v1/run or /v1/judge request each) from a Redis broker, with "
                "Dramatiq: at least once, results stored once (docs/deploy.md).")(worker_command)

    app.command("audit", help="Try escapes on this host and print which layer stops each (exit 1 if any got through, "
                "2 if none did but some probes were skipped).")(audit_command)

    @app.command("doctor", help="Check this host for what jailpy needs (user namespaces, id ranges, cgroups, Landlock, "
                 "AppArmor, SELinux, seccomp) and what spoils it (swap, CPU frequency scaling, SMT), with the exact fix "
                 "for each. Exit 0 when the default policy can run, 1 when it cannot.")
    def doctor(json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a report.")] = False) -> None:
        from . import doctor as doctor_mod

        ok, checks = doctor_mod.run_all()
        print(doctor_mod.report_json(ok, checks) if json_out else doctor_mod.report_text(ok, checks))
        if not ok:
            raise typer.Exit(1)


class _Forwarder:
    """jailpy's handlers for the signals it forwards (child.FORWARDED: SIGINT, SIGTERM, SIGHUP,
    SIGQUIT, SIGUSR1, SIGUSR2), installed as soon as `jailpy exec` starts: a signal that comes
    before the sandbox exists is kept and given to it (the program is then not started and the
    run ends as if the signal had killed it), one that comes later goes to the program."""

    def __init__(self) -> None:
        import signal

        from .child import FORWARDED

        self.early: list[int] = []
        self.sandbox = None
        for s in FORWARDED:
            signal.signal(s, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.sandbox is None:
            self.early.append(signum)
        else:
            self.sandbox.send_signal(signum)

    def attach(self, sandbox) -> None:
        """From now on, signals go to ``sandbox``'s run (held until it begins), and job control
        reaches it: the program runs in a session of its own (so it cannot type into your
        terminal), where Ctrl-Z would not stop it; so jailpy stops it (Sandbox.suspend) when the
        terminal stops jailpy (SIGTSTP, SIGTTIN, SIGTTOU), and continues it with jailpy
        (SIGCONT), unless jailpy is then in the background while the program's stdin is the
        terminal: a background program could read what you type at the shell's prompt."""
        import signal

        sandbox.hold_signals()
        self.sandbox = sandbox
        while self.early:
            sandbox.send_signal(self.early.pop(0))
        for s in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(s, self._stop)
        signal.signal(signal.SIGCONT, self._cont)
        if _background_at_the_terminal():
            self._stop(signal.SIGTTIN, None)

    def finish(self) -> None:
        """The program is done: a signal from now on (Ctrl-C while jailpy's own output waits
        for a terminal stopped with Ctrl-S, or for a reader that stopped reading) ends jailpy at
        once with 128+N, as it would end any program writing there; what output was still on its
        way is dropped.  Job control goes back to the defaults."""
        import signal

        from .child import FORWARDED

        for s in FORWARDED:
            signal.signal(s, lambda signum, _frame: os._exit(128 + signum))
        for s in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCONT):
            signal.signal(s, signal.SIG_DFL)

    def _stop(self, signum: int, _frame: object) -> None:
        import signal

        self.sandbox.suspend()
        if signum == signal.SIGTTIN:
            print("jailpy: stopped: the program's stdin is your terminal and jailpy is in the background, where "
                  "it could read what you type; 'fg' goes on (or start it with < /dev/null)", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGSTOP)

    def _cont(self, _signum: int, _frame: object) -> None:
        import signal

        if _background_at_the_terminal():
            self._stop(signal.SIGTTIN, None)
        else:
            self.sandbox.resume()


def _background_at_the_terminal() -> bool:
    """Whether jailpy's stdin is a terminal whose foreground process group is not jailpy's (a
    job in the background: tcgetpgrp(3))."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) != os.getpgrp()
    except OSError:
        return False


def _fill_std_fds() -> None:
    """Open /dev/null on any of fds 0-2 the caller closed, before jailpy opens anything: else a
    file jailpy opens (the --report file) would take that number and reach the program."""
    import os

    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open("/dev/null", os.O_RDWR)
            if null != fd:  # a lower fd was closed too and took it: the loop fills that one first
                os.dup2(null, fd)
                os.close(null)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)


def _once_did_you_mean(msg: str) -> str:
    """Click (8.2+) and typer each add "Did you mean ...?" to an unknown command's message: keep the first."""
    import re

    first = msg.find("Did you mean")
    if first < 0:
        return msg
    end = first + len("Did you mean")
    return msg[:end] + re.sub(r"\s*Did you mean [^?]*\?", "", msg[end:])


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jailpy`` console script; returns the exit status."""
    from .cli_text import escape_undecodable_output
    from .errors import JailpyError

    global _exit_code
    _exit_code = 0
    _fill_std_fds()
    escape_undecodable_output()
    try:
        args = sys.argv[1:] if argv is None else argv
        if args[:1] != ["exec"]:
            _register_subcommands()
        which = _exec_app if args[:1] == ["exec"] else app
        rv = which(args=args, prog_name="jailpy", standalone_mode=False)
    except JailpyError as e:
        print(f"jailpy: error: {e}", file=sys.stderr)
        return e.exit_code
    except click.exceptions.Abort:
        print("jailpy: aborted", file=sys.stderr)
        return 125
    except click.exceptions.ClickException as e:  # usage errors: bad flag, bad value
        fmt = getattr(e, "format_message", None)
        msg = fmt() if fmt else str(e)
        if not msg.strip():  # bare `jailpy`: the help was printed
            return 0
        print(f"jailpy: error: {one_line(' '.join(_once_did_you_mean(msg).split()))} (see --help)", file=sys.stderr)
        return 125
    except OSError as e:  # out of fds before or after the API turned it into a JailpyError
        if e.errno not in (errno.EMFILE, errno.ENFILE):
            raise
        print(f"jailpy: error: {fd_exhausted(e)}", file=sys.stderr)
        return 125
    if isinstance(rv, int) and rv != 0:  # --help and friends return their exit code
        return rv
    return _exit_code


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s status.  Exits with os._exit(2) once
    Python's own buffers are flushed: jailpy has closed every file it wrote and reaped (or left to
    init) every process it started, and the interpreter's teardown of the modules the CLI
    loaded would add about a fifth to ``jailpy exec``'s run time (bench/startup.py)."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass  # the reader went away: nothing more to say to it
    os._exit(code)


if __name__ == "__main__":
    run()


if sys.argv[1:2] != ["exec"]:  # `app` whole for whoever imports this module (tests, tools, typer's completion)
    _register_subcommands()
