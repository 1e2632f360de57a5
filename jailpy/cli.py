"""The ``jailpy`` command: parse flags, call the API, print.  No kernel logic here.

Exit status: the program's own; 128+N when a signal N killed it; 126 cannot execute;
127 not found; 125 jailpy's own error (one line on stderr saying why).
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import click
import typer

app = typer.Typer(
    name="jailpy",
    help="Run an untrusted program in a sandbox: it sees a read-only copy of this machine, no network, "
    "no other processes and none of your private files, and has no privileges.  No root needed.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_exit_code = 0


@app.callback()
def _root() -> None:
    """Run an untrusted program in a sandbox (see: jailpy exec --help)."""

FS = "Filesystem"
PROC = "Program"
OUT = "Limits and report"


@app.command(
    "exec",
    context_settings={"allow_interspersed_args": False},
    help="Run COMMAND [ARGS]... in a new sandbox and exit with its exit status.\n\n"
    "Example: jailpy exec -- python3 untrusted.py\n\n"
    "Put -- before the command so its own options are not read as jailpy's.",
)
def exec_(
    command: Annotated[list[str], typer.Argument(help="The program and its arguments.", show_default=False)],
    policy: Annotated[Optional[str], typer.Option("--policy", "-p", metavar="NAME|PATH",
        help="Start from this policy (a name from policies/, or a TOML file). Flags override it.")] = None,
    rootfs: Annotated[Optional[str], typer.Option(metavar="DIR", rich_help_panel=FS,
        help="Use DIR as the (read-only) root filesystem instead of this machine's /.")] = None,
    no_cwd: Annotated[bool, typer.Option("--no-cwd", rich_help_panel=FS,
        help="Do not bind the current directory (read-only) into the sandbox.")] = False,
    bind: Annotated[Optional[list[str]], typer.Option(metavar="SRC[:DST]", rich_help_panel=FS,
        help="Make host path SRC visible and WRITABLE at DST (default: the same path). Repeatable.")] = None,
    ro_bind: Annotated[Optional[list[str]], typer.Option(metavar="SRC[:DST]", rich_help_panel=FS,
        help="Make host path SRC visible read-only at DST (default: the same path). Repeatable.")] = None,
    tmpfs: Annotated[Optional[list[str]], typer.Option(metavar="DST[:SIZE]", rich_help_panel=FS,
        help="An empty writable directory at DST, in memory, capped at SIZE (default 64M). Repeatable.")] = None,
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
        help="How sandbox ids map to host ids: range uses your /etc/subuid range (via newuidmap), so the "
        "program owns none of your files; single maps one id; auto picks range when you have one.")] = None,
    network: Annotated[Optional[str], typer.Option(metavar="none", rich_help_panel=PROC,
        help="Network access: none (only a private loopback) is the one mode so far.")] = None,
    wall_time: Annotated[Optional[float], typer.Option(metavar="SECONDS", rich_help_panel=OUT,
        help="Kill the whole sandbox after this many seconds of real time (verdict WLE).")] = None,
    report: Annotated[Optional[str], typer.Option(metavar="PATH|-", rich_help_panel=OUT,
        help="Write the result as JSON (verdict, exit code, times, active protections) to PATH, or - for stderr.")] = None,
) -> None:
    global _exit_code
    from . import policy as policy_mod
    from .supervisor import Sandbox

    pol = policy_mod.load(policy or "default")
    changes = {k: v for k, v in {
        "rootfs": rootfs, "bind": bind, "ro_bind": ro_bind, "tmpfs": tmpfs, "tmp_size": tmp_size,
        "hostname": hostname, "env": env, "env_pass": env_pass, "pass_fd": pass_fd, "uid": uid, "gid": gid,
        "id_map": id_map, "network": network, "wall_time": wall_time,
    }.items() if v is not None}
    if no_cwd:
        changes["cwd"] = False
    if changes:
        pol = pol.replace(**changes)
    report_file = None
    if report is not None and report != "-":
        try:
            report_file = open(report, "wb")
        except OSError as e:
            raise policy_mod.PolicyError(f"--report: cannot write {report}: {e.strerror}") from None
    sandbox = Sandbox(pol, reuse_userns=False)  # one run: a new user namespace costs less than a reusable one
    _forward_signals(sandbox)
    result = sandbox.run(command)
    if result.error:
        print(f"jailpy: {result.error}", file=sys.stderr)
    if report == "-":
        sys.stderr.buffer.write(result.to_json() + b"\n")
        sys.stderr.flush()
    elif report_file is not None:
        with report_file:
            report_file.write(result.to_json() + b"\n")
    _exit_code = result.exit_code


def _forward_signals(sandbox) -> None:
    import signal

    from .child import FORWARDED

    for s in FORWARDED:
        signal.signal(s, lambda signum, _frame: sandbox.send_signal(signum))


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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jailpy`` console script; returns the exit status."""
    from .errors import JailpyError

    global _exit_code
    _exit_code = 0
    _fill_std_fds()
    try:
        rv = app(args=argv, prog_name="jailpy", standalone_mode=False)
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
        print(f"jailpy: error: {' '.join(msg.split())} (see --help)", file=sys.stderr)
        return 125
    if isinstance(rv, int) and rv != 0:  # --help and friends return their exit code
        return rv
    return _exit_code


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
