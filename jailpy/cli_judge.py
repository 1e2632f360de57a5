"""``jailpy judge``, ``jailpy serve`` and ``jailpy worker``: parse, call the API, print.

Registered in jailpy/cli.py.  Nothing here is imported by ``jailpy exec``'s start-up beyond
typer (already loaded): the judge and the service are imported when their command runs.

``jailpy judge`` exits 0 when the submission is accepted (AC), 1 for any other verdict, 125 for
jailpy's own errors (a bad problem directory, an unknown language, a sandbox that cannot be built).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

STYLE = {"AC": "green", "WA": "red", "CE": "yellow", "XX": "bold magenta"}


def judge_command(
    problem_dir: Annotated[str, typer.Argument(metavar="PROBLEM_DIR", help="A directory with a problem.toml.")],
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="The submission's source file.")],
    lang: Annotated[Optional[str], typer.Option("--lang", "-l", metavar="LANG",
        help="c, cpp, python, java, go or node (default: from SOURCE's extension).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", metavar="N", help="Run N tests at once.")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON (docs/judge.md) instead of a table.")] = False,
    stop: Annotated[bool, typer.Option("--stop-on-first-failure", help="Stop at the first test that fails.")] = False,
) -> None:
    """Compile SOURCE and run it on every test of PROBLEM_DIR in a sandbox; print a verdict per test.

    Exit status: 0 accepted (AC), 1 any other verdict, 125 jailpy's own error."""
    from .judge import Judge

    with Judge(problem_dir, jobs=jobs) as j:
        total = len(j.problem.tests)
        if json_out or not sys.stderr.isatty():
            report = j.judge(source, lang, stop_on_first_failure=stop)
        else:
            report = _with_progress(j, source, lang, stop, total)
    if json_out:
        sys.stdout.buffer.write(report.to_json() + b"\n")
    else:
        _print_table(report)
    raise typer.Exit(0 if report.verdict == "AC" else 1)


def _with_progress(j, source: str, lang: str | None, stop: bool, total: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("compiling", total=total)

        def progress(t, done: int, n: int) -> None:
            bar.update(task, completed=done, description=f"test {t.name}: {t.verdict}")

        return j.judge(source, lang, stop_on_first_failure=stop, progress=progress)


def _print_table(report) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    con = Console(highlight=False)
    if report.compile is not None and report.compile.verdict == "CE":
        con.print("[yellow]compile error[/yellow]")
        con.print(report.compile.message.rstrip(), markup=False)
    if report.tests:
        table = Table(title=escape(f"{report.problem} ({report.language})"))
        for col in ("test", "verdict", "cpu ms", "wall ms", "memory", "detail"):
            table.add_column(col, justify="right" if col in ("cpu ms", "wall ms", "memory") else "left")
        for t in report.tests:
            mem = f"{t.memory_peak_bytes / (1 << 20):.1f} MiB" if t.memory_peak_bytes else "-"
            detail = t.error or t.checker_message or ""  # shows the program's output: text, never markup
            v = t.verdict
            table.add_row(escape(t.name), f"[{STYLE.get(v, 'red')}]{escape(v)}[/]", str(t.cpu_time_ms),
                          str(t.wall_time_ms), mem, escape(detail[:60]))
        con.print(table)
    extra = f", {report.skipped} not run" if report.skipped and report.tests else ""
    con.print(f"verdict: [{STYLE.get(report.verdict, 'red')}]{report.verdict}[/] "
              f"({report.passed}/{len(report.tests)} passed{extra}; max {report.max_cpu_time_ms} ms, "
              f"{report.max_memory_peak_bytes / (1 << 20):.1f} MiB)")


def _need_service() -> None:
    from .errors import HostError

    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise HostError(f"jailpy serve needs the service extra ({e.name} is missing): "
                        f"pip install 'jailpy[service]'") from None


def _read_token(path: str | None) -> str | None:
    from .errors import PolicyError

    if path is None:
        return None
    try:
        with open(path) as f:
            token = f.read().strip()
    except OSError as e:
        raise PolicyError(f"--token-file: cannot read {path}: {e.strerror}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise PolicyError("--token-file: the token must be at least 16 characters, without spaces")
    return token


def _parse_listen(listen: str) -> tuple[str | None, int | None, str | None]:
    """(host, port, unix socket path) from HOST:PORT, [V6]:PORT or unix:PATH."""
    from .errors import PolicyError

    if listen.startswith("unix:"):
        path = listen[5:]
        if not path:
            raise PolicyError("--listen: unix:PATH needs a path")
        return None, None, path
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise PolicyError(f"--listen: expected HOST:PORT or unix:PATH, got {listen!r}")
    return host.strip("[]"), int(port), None


def _listen_socket(listen: str, host: str | None, port: int | None, uds: str | None):
    """The listening socket for ``jailpy serve --listen``, made before uvicorn starts, so that a
    port in use or a unix socket path that cannot be made is one ``jailpy: error:`` line (exit
    125) instead of uvicorn's log and traceback.  As uvicorn would: SO_REUSEADDR on TCP (socket(7));
    a stale socket file at the unix path is replaced (as asyncio's create_unix_server does) and the
    new one is 0600 (only this user may connect), whatever else is there is refused.  Raises HostError (bind(2), listen(2) errors)."""
    import socket
    import stat

    from .errors import HostError

    try:
        if uds is not None:
            try:
                if stat.S_ISSOCK(os.lstat(uds).st_mode):
                    os.unlink(uds)
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)  # mode 0600: only this user may connect (uvicorn's uds= makes it 0666)
            try:
                sock.bind(uds)
            except BaseException:
                sock.close()
                raise
            finally:
                os.umask(old)
        else:
            family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(addr)
            except BaseException:
                sock.close()
                raise
        sock.listen(2048)
    except socket.gaierror as e:
        raise HostError(f"--listen {listen}: cannot resolve {host!r}: {e.strerror}") from None
    except OSError as e:
        hint = " (the port is in use: pick another)" if e.errno == 98 else ""
        raise HostError(f"--listen {listen}: cannot listen: {e.strerror}{hint}") from None
    return sock


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_command(
    listen: Annotated[str, typer.Option("--listen", metavar="HOST:PORT|unix:PATH",
        help="Where to listen (default 127.0.0.1:5050; another address needs --token-file).")] = "127.0.0.1:5050",
    problems: Annotated[Optional[str], typer.Option("--problems", metavar="DIR",
        help="A directory of problem directories, for POST /v1/judge.")] = None,
    broker: Annotated[Optional[str], typer.Option("--broker", metavar="redis://HOST:PORT/DB",
        help="Add POST /v1/jobs and GET /v1/jobs/ID, run by jailpy worker processes.")] = None,
    token_file: Annotated[Optional[str], typer.Option("--token-file", metavar="PATH",
        help="Require 'Authorization: Bearer TOKEN' with the token in PATH.")] = None,
    slots: Annotated[int, typer.Option("--slots", metavar="N",
        help="Sandboxes at once (default: the number of CPUs); more requests get 429.")] = 0,
    max_body: Annotated[int, typer.Option("--max-body", metavar="BYTES", help="Largest request body.")] = 64 << 20,
    read_timeout: Annotated[float, typer.Option("--read-timeout", metavar="SECONDS",
        help="Close a connection whose request (headers and body) has not arrived whole in this time.")] = 30.0,
) -> None:
    """Serve the HTTP API (docs/api.md): /v1/run, go-judge's /run, /v1/judge, /v1/files, /v1/health, /metrics."""
    from .errors import PolicyError

    _need_service()
    host, port, uds = _parse_listen(listen)
    token = _read_token(token_file)
    if host is not None and not _loopback(host) and token is None:
        raise PolicyError(f"--listen {listen}: listening beyond this machine needs --token-file (bearer auth)")
    if not 0 < read_timeout <= 3600:
        raise PolicyError(f"--read-timeout: between 0 and 3600 seconds, got {read_timeout}")
    if not 0 <= slots <= 256:
        raise PolicyError(f"--slots: between 1 and 256 (0: the number of CPUs), got {slots}")
    if max_body < 1:
        raise PolicyError(f"--max-body: at least 1 byte, got {max_body}")
    if problems is not None and not os.path.isdir(problems):
        raise PolicyError(f"--problems: not a directory: {problems}")
    if broker is not None:
        from .service.jobs import check_broker_url

        check_broker_url(broker)
    import uvicorn

    from .service.app import create_app
    from .service.worker import self_check

    self_check()  # as jailpy worker does: a host that cannot run requests (no cgroup) refuses to start
    sock = _listen_socket(listen, host, port, uds)
    app = create_app(slots=slots, problems=problems, token=token, broker=broker, max_body=max_body)
    print(f"jailpy: serving on {listen}", file=sys.stderr, flush=True)
    from .service.http import DeadlineH11Protocol

    class Protocol(DeadlineH11Protocol):
        pass

    Protocol.read_timeout = read_timeout
    config = uvicorn.Config(app, log_level="warning", access_log=False, http=Protocol, limit_concurrency=1024,
                            timeout_keep_alive=30, backlog=2048)
    uvicorn.Server(config).run(sockets=[sock])


def worker_command(
    broker: Annotated[str, typer.Option("--broker", metavar="redis://HOST:PORT/DB",
        help="The Redis broker the jobs come from.")],
    slots: Annotated[int, typer.Option("--slots", metavar="N", help="Jobs at once (default 1).")] = 1,
    problems: Annotated[Optional[str], typer.Option("--problems", metavar="DIR",
        help="A directory of problem directories, for judge jobs.")] = None,
    heartbeat_timeout: Annotated[float, typer.Option("--heartbeat-timeout", metavar="SECONDS",
        help="A worker silent this long is dead: its jobs are run again elsewhere.")] = 15.0,
) -> None:
    """Run jobs from a Redis broker (POST /v1/jobs, jailpy.service.submit) until SIGTERM (docs/deploy.md)."""
    from .errors import PolicyError

    _need_service()
    try:
        import dramatiq  # noqa: F401
        import redis  # noqa: F401
    except ImportError as e:
        from .errors import HostError

        raise HostError(f"jailpy worker needs the service extra ({e.name} is missing): "
                        f"pip install 'jailpy[service]'") from None
    from .service.jobs import check_broker_url
    from .service.worker import main_loop

    check_broker_url(broker)
    if not 1 <= slots <= 256:
        raise PolicyError(f"--slots: between 1 and 256, got {slots}")
    if not 0.5 <= heartbeat_timeout <= 3600:
        raise PolicyError(f"--heartbeat-timeout: between 0.5 and 3600 seconds, got {heartbeat_timeout}")
    if problems is not None and not os.path.isdir(problems):
        raise PolicyError(f"--problems: not a directory: {problems}")
    main_loop(broker, slots, problems, int(heartbeat_timeout * 1000))
