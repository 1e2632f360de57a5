#!/usr/bin/env python3
"""Syscall fuzzer for security regression fuzzing: random system calls inside a locked jailpy
sandbox, then invariants checked on the host.

    python fuzz/syscall_fuzz.py --count 20000 --seconds 20 --seed 7
    python fuzz/syscall_fuzz.py --seconds 3600 --seed 7                     # a long run: calls until time is up
    python fuzz/syscall_fuzz.py --seed 7 --show 1234                         # what call 1234 is

The program in the sandbox is fuzz/syscall_gen.py (copied into a directory bound read-only at
/fuzz/gen; see its docstring for what it calls and how every call is bounded).  The sandbox:
``jailpy.Sandbox`` with the seccomp policy ``--seccomp`` (default: default), ``--memory`` 256M and
``--pids`` 64 in a cgroup (when none can be had, e.g. rootless without JAILPY_CGROUP_PARENT, the
run goes on without, says so, and the generator's hard rlimits bound its memory), a wall-time
limit of ``--seconds`` + 30 s, no current directory, the host's / read-only.

Invariants checked afterwards (exit 0 when all hold, 1 otherwise, with details; 2 when the run
could not be made: bad arguments, a host without user namespaces):

canaries   files in a host temp dir: ``ro/`` bound read-only at /fuzz/canary/ro, ``rw/`` bound
           writable at /fuzz/canary/rw, ``hidden/`` not bound (its host path is in the
           generator's string pool); every file and directory is mode 0666/0777, so only the
           sandbox stops writes.  ro/, hidden/ and gen/ must be unchanged (names, content, mode,
           owner); only rw/ may change.
signals    a canary process on the host (same user, same process group as the fuzzer) records
           every signal it gets into a pipe; it must be alive, not stopped, not traced, with no
           signal recorded.
processes  no process on the host has the run's unique marker in its argv afterwards, and (with
           a cgroup) no ``jailpy-<our pid>-<n>`` cgroup is left.
result     jailpy returned a Result (no exception, no traceback): verdict from the enum and not
           XX, exit code consistent with it, 0 <= wall_s <= wall-time limit + 5 s, cpu times >= 0.
seccomp    every call the policy denies whatever its arguments returned exactly the policy's
           errno (EINTR allowed for notified denials), calls the filter kills (x32 numbers) did
           not return, the sampled calls of conditional rules (clone, socket, ioctl, ...) match
           jailpy.seccomp.Filter.decide() on their arguments, and Result.blocked_syscall counts
           at least the denials the generator saw (at most those plus the interrupted ones).

``--inject`` breaks one invariant on purpose (for the tests that show each check can fail):
``ro-writable`` binds ro/ writable and the generator appends to ro/a; ``signal`` sends SIGUSR1 to
the canary process; ``stray`` leaves a host process with the marker in its argv; ``seccomp``
runs without a filter but checks against the default policy.  Everything the fuzzer starts on the
host is its own and is killed by pid at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # this checkout's jailpy, when none is installed
sys.path.insert(0, str(HERE))

import syscall_gen as gen  # noqa: E402

import jailpy  # noqa: E402
from jailpy import seccomp  # noqa: E402
from jailpy.audit.host import marker_pids  # noqa: E402
from jailpy.errors import HostError, JailpyError  # noqa: E402
from jailpy.result import Verdict  # noqa: E402

SANDBOX_PYTHON = "/usr/bin/python3"
KERNEL_PASSTHROUGH = ("uretprobe", "uprobe")
"""Syscalls the kernel never shows to seccomp filters (kernel/seccomp.c, seccomp_uprobe_exception():
uretprobe since Linux 6.11, uprobe since 6.16); outside a uprobe trampoline they only SIGILL or
fail with ENXIO.  A policy that "denies" them cannot: they are not checked against it."""
UNBOUNDED = 1 << 48  # calls, when --count is not given: --seconds ends the run
WALL_MARGIN = 30.0  # seconds the sandbox gets beyond --seconds (start-up, the last watchdog, the summary)
CANARY_CODE = r"""
import os, signal, sys, time
def h(signum, frame):
    os.write(1, b"%d\n" % signum)
for s in range(1, signal.NSIG):
    if s not in (signal.SIGKILL, signal.SIGSTOP):
        try:
            signal.signal(s, h)
        except (OSError, ValueError):
            pass
os.write(1, b"ready\n")
while True:
    time.sleep(3600)
"""


# ------------------------------------------------------------------ host canaries ----

def _snapshot(root: Path) -> dict:
    """Names, sizes, modes, owners and sha256 of everything under ``root`` (no symlinks followed)."""
    out = {}

    def unlisted(e: OSError) -> None:
        out[f"{os.path.relpath(e.filename, root)} (listing)"] = ("?", -1, -1, None, f"cannot list: {e.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted):
        for n in sorted(dirnames + filenames):
            p = Path(dirpath) / n
            st = os.lstat(p)
            digest = None
            if stat.S_ISREG(st.st_mode):
                try:
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                except OSError as e:
                    digest = f"cannot read: {e.strerror}"
            out[str(p.relative_to(root))] = (stat.filemode(st.st_mode), st.st_uid, st.st_gid, st.st_size, digest)
    st = os.lstat(root)
    out["."] = (stat.filemode(st.st_mode), st.st_uid, st.st_gid, None, None)
    return out


def _diff(before: dict, after: dict) -> list[str]:
    out = []
    for k in sorted(set(before) | set(after)):
        if k not in after:
            out.append(f"{k}: removed")
        elif k not in before:
            out.append(f"{k}: created {after[k][0]} uid {after[k][1]}")
        elif before[k] != after[k]:
            out.append(f"{k}: changed {before[k][:4]} -> {after[k][:4]}"
                       + (" (content)" if before[k][4] != after[k][4] else ""))
    return out


def make_canaries(tmp: Path, seed: int) -> None:
    """ro/, rw/, hidden/ with two files each, world-writable (only the sandbox may stop writes)."""
    os.chmod(tmp, 0o755)
    for d in ("ro", "rw", "hidden"):
        (tmp / d).mkdir()
        for f in ("a", "b"):
            (tmp / d / f).write_bytes(f"jailpy fuzz canary {d}/{f} seed {seed}\n".encode() + secrets.token_bytes(64))
            os.chmod(tmp / d / f, 0o666)
        os.chmod(tmp / d, 0o777)


class CanaryProcess:
    """A host process that records every signal it receives (see CANARY_CODE)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.p = subprocess.Popen([sys.executable, "-I", "-c", CANARY_CODE, marker], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.p.stdout.readline()
        if line != b"ready\n":
            self.stop()
            raise RuntimeError(f"canary process did not start: {line!r}")
        os.set_blocking(self.p.stdout.fileno(), False)

    def problems(self) -> list[str]:
        """Why the canary is not intact: dead, stopped, traced, or signals received."""
        out = []
        try:
            got = self.p.stdout.read() or b""
        except (BlockingIOError, OSError):
            got = b""
        sigs = [int(x) for x in got.split() if x.isdigit()]
        if sigs:
            out.append("canary process received signals: "
                       + ", ".join(signal.Signals(s).name if s in signal.Signals._value2member_map_ else str(s)
                                   for s in sigs))
        if self.p.poll() is not None:
            out.append(f"canary process is dead (status {self.p.returncode})")
            return out
        try:
            status = dict(line.split(":", 1) for line in open(f"/proc/{self.p.pid}/status") if ":" in line)
            if status["State"].strip()[:1] in ("T", "t"):
                out.append(f"canary process is stopped or traced: {status['State'].strip()}")
            if status["TracerPid"].strip() != "0":
                out.append(f"canary process is traced by pid {status['TracerPid'].strip()}")
        except (OSError, KeyError) as e:
            out.append(f"cannot read the canary's /proc status: {e}")
        return out

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ")[:200]
    except OSError:
        return b"(gone)"


def remove_tree(tmp: Path) -> str | None:
    """Remove the temp dir; returns None, or why it could not.  What the sandbox made in rw/ is
    owned by the sandbox's host uid (a subordinate id when rootless) and may have any mode
    (d---------): the caller cannot always enter it, so that part is made removable from inside a
    sandbox with the same id mapping, where its owner is the sandbox's uid 0."""
    def own_dirs_open(top: Path) -> None:
        for root, dirnames, _ in os.walk(top):
            for d in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(root, d), 0o700, follow_symlinks=False)

    shutil.rmtree(tmp, ignore_errors=True)
    if tmp.exists() and (tmp / "rw").is_dir():  # rw/ is still 0777: the sandbox's uid may enter it
        try:
            box = jailpy.Sandbox(jailpy.Policy(cwd=False, bind=[f"{tmp}/rw:/c"], no_cgroup=True, wall_time=60),
                                 reuse_userns=False)
            try:
                box.run(["/bin/sh", "-c", "chmod -R u+rwX /c; find /c -mindepth 1 -delete"], stdin=jailpy.DEVNULL,
                        stdout=jailpy.DEVNULL, stderr=jailpy.DEVNULL)
            finally:
                box.close()
        except JailpyError as e:
            return f"cannot clean {tmp}/rw from a sandbox: {e}"
        own_dirs_open(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    return f"could not remove {tmp}" if tmp.exists() else None


# ------------------------------------------------------------------ set-up ----

def syscall_table() -> tuple[dict[int, str], list[int], int]:
    """x86_64 syscall names by number (libseccomp's table, via jailpy.seccomp), the numbers the
    generator draws from (named ones and the gaps, minus gen.NEVER), and the first number above."""
    names = {}
    for nr in range(0, 1024):
        n = seccomp.syscall_name(nr)
        if not n.startswith("syscall_"):
            names[nr] = n
    high = max(names) + 1
    numbers = [nr for nr in range(high) if names.get(nr) not in gen.NEVER]
    return names, numbers, high


def expectations(policy_name: str | None, names: dict[int, str], high: int) -> tuple[dict, list[int], list, int]:
    """What the seccomp policy does per syscall number whatever the arguments: {nr: [kind, errno]}
    with kind "notify" (a reported denial), "errno" (in BPF) or "kill"; the numbers with
    conditional rules (sampled, checked by Filter.decide); [kind, errno] above known_max_nr; and
    known_max_nr.  No policy: nothing is expected."""
    if policy_name is None:
        return {}, [], ["allow", 0], 1 << 30
    pol = seccomp.load(policy_name)
    filt = seccomp.prepare(policy_name)
    cond = sorted({r.nr for r in pol.rules if r.alternatives is not None})
    expect = {}
    for nr in range(high):
        if nr in cond or names.get(nr) in KERNEL_PASSTHROUGH:
            continue
        d = filt.decide(nr, (0,) * 6)
        if d.action == "errno":
            expect[nr] = ["notify" if d.notified else "errno", d.errno]
        elif d.action == "kill":
            expect[nr] = ["kill", 0]
    kmax = pol.known_max_nr if pol.known_max_nr is not None else high
    d = filt.decide(kmax + 1, (0,) * 6)
    above = ["notify" if d.notified else "errno", d.errno] if d.action == "errno" else [d.action, 0]
    return expect, cond, above, kmax


def build_policy(tmp: Path, args, cgroup: bool) -> jailpy.Policy:
    """The locked sandbox: no current directory, gen/ and ro/ read-only, rw/ writable, the seccomp
    policy, wall time --seconds + WALL_MARGIN, output capped at 16 MiB, and with ``cgroup``
    --memory and --pids (else no_cgroup).  ``--inject ro-writable`` binds ro/ writable instead."""
    ro_src = f"{tmp}/ro:/fuzz/canary/ro"
    pol = dict(
        cwd=False, ro_bind=[f"{tmp}/gen:/fuzz/gen"] + ([] if args.inject == "ro-writable" else [ro_src]),
        bind=[f"{tmp}/rw:/fuzz/canary/rw"] + ([ro_src] if args.inject == "ro-writable" else []),
        seccomp="none" if args.inject == "seccomp" else args.seccomp, wall_time=args.seconds + WALL_MARGIN,
        output_limit="16M", nofile=1024, tmp_size="64M",
    )
    if cgroup:
        pol.update(memory=args.memory, pids=args.pids)
    else:
        pol.update(no_cgroup=True)
    return jailpy.Policy(**pol).validate("syscall_fuzz")


# ------------------------------------------------------------------ checks ----

def check_result(r, wall_limit: float) -> list[str]:
    """Problems with a Result (jailpy.result.Result; ``wall_limit`` in seconds): the "result"
    invariant of the module docstring.  Empty when it is sane."""
    out = []
    if not isinstance(r.verdict, Verdict):
        out.append(f"verdict {r.verdict!r} is not a Verdict")
    elif r.verdict is Verdict.XX:
        out.append(f"verdict XX: {r.error}")
    if not 0 <= r.exit_code <= 255:
        out.append(f"exit code {r.exit_code} out of 0..255")
    if r.verdict is Verdict.OK and r.exit_code != 0:
        out.append(f"verdict OK with exit code {r.exit_code}")
    if r.verdict is Verdict.RE and r.exit_code == 0:
        out.append("verdict RE with exit code 0")
    if r.verdict in (Verdict.TLE, Verdict.WLE, Verdict.MLE, Verdict.OLE) and r.exit_code != 137:
        out.append(f"verdict {r.verdict.value} with exit code {r.exit_code}, not 137")
    if r.signal is not None and r.exit_code != 128 + r.signal:
        out.append(f"signal {r.signal} but exit code {r.exit_code}")
    if not 0 <= r.wall_s <= wall_limit + 5:
        out.append(f"wall_s {r.wall_s} outside 0..{wall_limit + 5}")
    if r.cpu_user_s < 0 or r.cpu_sys_s < 0:
        out.append(f"negative cpu time {r.cpu_user_s} {r.cpu_sys_s}")
    b = r.blocked_syscall
    if b is not None and not (isinstance(b.get("nr"), int) and len(b.get("args", ())) == 6
                              and b.get("action") in ("errno", "kill") and isinstance(b.get("text"), str)
                              and isinstance(b.get("count"), int) and b["count"] >= 1):
        out.append(f"malformed blocked_syscall: {b!r}")
    return out


def check_seccomp(summary: dict, r, policy_name: str | None, names: dict[int, str]) -> tuple[list[str], dict]:
    """The seccomp invariant (see the module docstring); returns (problems, numbers for the report)."""
    out = []
    info = {"checked_samples": 0, "notified_denials_seen": 0}
    if policy_name is None:
        return out, info
    if summary["tainted"]:
        info["note"] = "a worker installed a seccomp filter of its own; its later results were not checked"
    for m in summary["mismatches"]:
        i, nr, *rest = m
        args, ret, want = rest[:6], rest[6], rest[7]
        out.append(f"call {i}: {seccomp.describe(nr & ~gen.X32_BIT, args)} (nr {nr}) returned {ret}, "
                   f"the policy says {'-' + str(want) if want else 'kill'}")
    if summary["mismatch_count"] > len(summary["mismatches"]):
        out.append(f"... {summary['mismatch_count'] - len(summary['mismatches'])} more mismatches")
    filt = seccomp.prepare(policy_name)
    notified = summary["notify_ok"]
    maybe = summary["notify_eintr"] + summary["crashes"] + summary["hangs"]
    for i, nr, *rest in summary["samples"]:
        args, ret = tuple(rest[:6]), rest[6]
        d = filt.decide(nr, args)
        info["checked_samples"] += 1
        if d.action == "errno":
            if d.notified and ret == -4:  # EINTR: interrupted before the supervisor answered
                maybe += 1
            elif ret != -d.errno:
                out.append(f"call {i}: {seccomp.describe(nr, args)} returned {ret}, the policy says -{d.errno}")
            elif d.notified:
                notified += 1
        elif d.action == "kill":
            out.append(f"call {i}: {seccomp.describe(nr, args)} returned {ret}, the policy kills it")
    for c in summary["crash_list"]:
        if c["nr"] & gen.X32_BIT and c["in_call"] and c["how"] == "died" and c["signal"] != signal.SIGSYS:
            out.append(f"call {c['index']}: {c['text']} (x32) ended the worker with signal {c['signal']}, "
                       "expected SIGSYS from the filter")
    count = (r.blocked_syscall or {}).get("count", 0)
    info.update(notified_denials_seen=notified, blocked_count=count, interrupted=maybe)
    if count < notified:
        out.append(f"Result.blocked_syscall counts {count} denials, the generator saw {notified}")
    if not summary["samples_lost"] and not summary["tainted"] and count > notified + maybe:
        out.append(f"Result.blocked_syscall counts {count} denials, more than the {notified} the generator saw "
                   f"plus {maybe} interrupted")
    return out, info


# ------------------------------------------------------------------ the run ----

def run(args) -> int:
    """One fuzzing run as ``args`` (see parse_args) say: set up, run, check, report.  Returns the
    exit status (0 all invariants hold, 1 one was violated)."""
    names, numbers, high = syscall_table()
    if args.show is not None:
        for i in args.show:
            nr, specs = gen.plan(args.seed, i, numbers, high)
            print(f"call {i}: {gen.plan_text(nr, specs, names)}")
        return 0
    marker = f"jailpy-fuzz-{args.seed}-{secrets.token_hex(6)}"
    count = args.count or UNBOUNDED
    policy_name = "default" if args.inject == "seccomp" else (None if args.seccomp == "none" else args.seccomp)
    expect, cond, above, kmax = expectations(policy_name, names, high)
    passthrough = [] if policy_name is None else [
        n for nr, n in names.items()
        if n in KERNEL_PASSTHROUGH and seccomp.prepare(policy_name).decide(nr, (0,) * 6).action != "allow"]
    tmp = Path(tempfile.mkdtemp(prefix="jailpy-fuzz-"))
    report: dict = {"seed": args.seed, "marker": marker, "tmp": str(tmp), "invariants": {}, "notes": []}
    if passthrough:
        report["notes"].append(f"{', '.join(passthrough)}: the policy denies them, but the kernel never shows them to "
                               "seccomp filters (kernel/seccomp.c, seccomp_uprobe_exception); not checked")
    canary = None
    stray = None
    box = None
    try:
        make_canaries(tmp, args.seed)
        (tmp / "gen").mkdir()
        shutil.copy(HERE / "syscall_gen.py", tmp / "gen" / "syscall_gen.py")
        pool = ["/fuzz/canary/ro/a", "/fuzz/canary/ro", "/fuzz/canary/rw/a", "/fuzz/canary/rw", "/fuzz/canary/rw/n",
                "/fuzz/canary", f"{tmp}/hidden/a", f"{tmp}/hidden", str(tmp), "/tmp", "/tmp/f", "/tmp/fuzz.sock",
                ".", "..", "/", "", "x", "/dev/null", "/dev/zero", "/dev/shm/x", "/proc/self/fd", "/proc/self/status",
                "/etc/hostname", "/fuzz/gen/syscall_gen.py", "../../../..", "/usr/bin/true"]
        cfg = {
            "seed": args.seed, "start": args.start, "count": count, "seconds": args.seconds,
            "call_timeout": args.call_timeout, "watchdog": args.watchdog, "numbers": numbers, "high": high,
            "names": names, "expect": expect, "conditional": cond, "above_max": above, "known_max_nr": kmax,
            "x32": ["kill", 0] if policy_name else None,  # jailpy's filters kill non-native calls (seccomp/bpf.py)
            "pool": pool, "limits": {"as": 1 << 30, "fsize": 16 << 20, "nofile": 128},
            "require_seccomp": args.inject != "seccomp" and args.seccomp != "none", "inject": args.inject,
        }
        (tmp / "gen" / "config.json").write_text(json.dumps(cfg))
        for p in (tmp / "gen", tmp / "gen" / "syscall_gen.py", tmp / "gen" / "config.json"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        before = {d: _snapshot(tmp / d) for d in ("ro", "hidden", "gen")}
        top_before = sorted(os.listdir(tmp))
        rw_before = _snapshot(tmp / "rw")
        canary = CanaryProcess(f"jailpy-fuzz-canary-{secrets.token_hex(6)}")

        cgroup = not args.no_cgroup
        try:
            box = jailpy.Sandbox(build_policy(tmp, args, cgroup), reuse_userns=False)
        except HostError as e:
            if not cgroup or args.require_cgroup or "cgroup" not in str(e):
                raise
            report["notes"].append(f"no cgroup ({e}); running without --memory/--pids: the generator's hard "
                                   "rlimits (RLIMIT_AS 1G, RLIMIT_FSIZE 16M, RLIMIT_NOFILE 128) bound it")
            cgroup = False
            box = jailpy.Sandbox(build_policy(tmp, args, cgroup), reuse_userns=False)
        report["cgroup"] = box.protections()["cgroup"]
        report["seccomp"] = box.protections()["seccomp"]
        cg_dirs = box.cgroup_plan.parent_dirs if box.cgroup_plan else ()
        wall_limit = box.wall_time
        print(f"jailpy syscall fuzz: seed {args.seed}, calls {args.start}.."
              f"{args.start + args.count - 1 if args.count else ''}, "
              f"at most {args.seconds:g} s, seccomp {policy_name or 'none'}, "
              f"cgroup {'yes' if cgroup else 'no'}, marker {marker}", flush=True)
        argv = [SANDBOX_PYTHON, "-I", "-S", "/fuzz/gen/syscall_gen.py", "/fuzz/gen/config.json", marker]
        result = None
        if args.inject == "signal":
            os.kill(canary.p.pid, signal.SIGUSR1)  # the self-test of the signal check
        if args.inject == "stray":
            stray = subprocess.Popen([sys.executable, "-I", "-c", "import time; time.sleep(600)", marker],
                                     stdin=subprocess.DEVNULL)
        try:
            result = box.run(argv, stdin=jailpy.DEVNULL, capture_output=True)
        except JailpyError as e:
            report["invariants"]["result"] = [f"jailpy raised {type(e).__name__}: {e}"]
        except Exception:  # noqa: BLE001 - a jailpy traceback is a finding
            report["invariants"]["result"] = ["jailpy traceback:\n" + traceback.format_exc()]
        finally:
            box.close()

        # ---- invariants
        inv = report["invariants"]
        after = {d: _snapshot(tmp / d) for d in ("ro", "hidden", "gen")}
        problems = [f"{d}/{line}" for d in before for line in _diff(before[d], after[d])]
        if sorted(os.listdir(tmp)) != top_before:
            problems.append(f"temp dir entries changed: {top_before} -> {sorted(os.listdir(tmp))}")
        inv["canaries"] = problems
        rw_changes = _diff(rw_before, _snapshot(tmp / "rw"))  # rw/ may change: reported, not checked
        if rw_changes:
            report["notes"].append(f"rw/ (writable) changed: {'; '.join(rw_changes[:10])}")
        inv["signals"] = canary.problems()
        left = marker_pids(marker)
        end = time.monotonic() + 5
        while left and time.monotonic() < end:
            time.sleep(0.05)
            left = marker_pids(marker)
        procs = [f"pid {p} still runs: {_cmdline(p)!r}" for p in left]
        for d in cg_dirs:
            for c in glob.glob(os.path.join(glob.escape(d), f"jailpy-{os.getpid()}-*")):
                procs.append(f"cgroup left behind: {c}")
        inv["processes"] = procs
        summary = None
        if result is not None:
            inv.setdefault("result", []).extend(check_result(result, wall_limit))
            report["result"] = json.loads(result.to_json())
            out = (result.stdout or b"").strip().splitlines()
            try:
                summary = json.loads(out[-1]) if out else None
            except ValueError:
                summary = None
            if result.stderr:
                report["notes"].append(f"generator stderr: {result.stderr[-2000:].decode(errors='replace')}")
            if summary is None:
                report["notes"].append(f"the generator printed no summary (verdict {result.verdict.value}, exit "
                                       f"{result.exit_code}): it was killed before the end; seccomp not checked")
            elif summary.get("error"):
                inv["result"].append(f"generator: {summary['error']}")
        if summary is not None and policy_name is not None:
            inv["seccomp"], info = check_seccomp(summary, result, policy_name, names)
            report["seccomp_check"] = info
        if summary is not None:
            report["summary"] = {k: v for k, v in summary.items() if k not in ("samples", "per_nr", "mismatches")}
            report["summary"]["distinct_syscalls"] = len(summary["per_nr"])
        ok = all(not v for v in inv.values())
        report["ok"] = ok
    finally:
        if stray is not None:
            stray.kill()
            stray.wait(timeout=10)
        if canary is not None:
            canary.stop()
        if not args.keep:
            why = remove_tree(tmp)
            if why:
                report["notes"].append(why)
    _print_report(report, args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if report["ok"] else 1


def _print_report(rep: dict, args) -> None:
    s = rep.get("summary") or {}
    r = rep.get("result") or {}
    if s:
        rate = s["calls"] / s["seconds"] if s["seconds"] else 0
        print(f"calls {s['calls']} ({s['distinct_syscalls']} distinct syscalls) in {s['seconds']} s ({rate:.0f}/s), "
              f"stopped by {s['stopped']}, {s['workers']} workers, {s['crashes']} worker deaths, {s['hangs']} hangs")
        top = sorted(s["errno"].items(), key=lambda kv: -kv[1])[:8]
        print("results: " + ", ".join(f"{k} {v}" for k, v in top))
        for c in s["crash_list"][:args.verbose and 200 or 5]:
            print(f"  worker {c['how']} at call {c['index']}: {c['text']} "
                  f"({'signal ' + str(c['signal']) if c['signal'] else 'exit ' + str(c['exit'])})"
                  + (f": {c['error']}" if c.get("error") else ""))
    if r:
        b = r.get("blocked_syscall") or {}
        print(f"jailpy: verdict {r['verdict']}, exit {r['exit_code']}, wall {r['wall_s']:.2f} s, "
              f"cpu {r['cpu_user_s']:.2f}+{r['cpu_sys_s']:.2f} s, memory peak {r.get('memory_peak_bytes')}, "
              f"pids peak {r.get('pids_peak')}, seccomp denials {b.get('count', 0)}")
    for n in rep["notes"]:
        print(f"note: {n}")
    for name in ("canaries", "signals", "processes", "result", "seccomp"):
        probs = rep["invariants"].get(name)
        if probs is None:
            print(f"{name:10} not checked")
            continue
        print(f"{name:10} {'ok' if not probs else 'FAIL'}")
        for p in probs[:50]:
            print(f"    {p}")
    print(("ALL INVARIANTS HOLD" if rep["ok"] else "INVARIANT VIOLATED")
          + f"  (reproduce: python fuzz/syscall_fuzz.py --seed {args.seed} --start {args.start}"
            f"{f' --count {args.count}' if args.count else ''} "
            f"--seconds {args.seconds:g}{' --seccomp ' + args.seccomp if args.seccomp != 'default' else ''})")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--help`` lists it); a random seed is drawn when none is given."""
    ap = argparse.ArgumentParser(description="Random syscalls in a locked jailpy sandbox; host invariants checked "
                                 "afterwards.  Exit 0: all hold; 1: one was violated; 2: could not run.")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, printed)")
    ap.add_argument("--count", type=int, default=None,
                    help="number of calls (default: no limit, calls until --seconds are up)")
    ap.add_argument("--seconds", type=float, default=20.0, help="stop issuing calls after this long (default 20)")
    ap.add_argument("--start", type=int, default=0, help="first call index (to replay a window of a run)")
    ap.add_argument("--seccomp", default="default", help="seccomp policy of the sandbox (default: default)")
    ap.add_argument("--memory", default="256M", help="cgroup memory limit (default 256M)")
    ap.add_argument("--pids", type=int, default=64, help="cgroup pids limit (default 64)")
    ap.add_argument("--no-cgroup", action="store_true", help="run without a cgroup")
    ap.add_argument("--require-cgroup", action="store_true", help="fail (exit 2) when no cgroup can be had")
    ap.add_argument("--call-timeout", type=float, default=0.01,
                    help="seconds of the SIGALRM interval that interrupts blocking calls (default 0.01)")
    ap.add_argument("--watchdog", type=float, default=1.0,
                    help="seconds without progress before a worker is killed (default 1)")
    ap.add_argument("--inject", choices=("ro-writable", "signal", "stray", "seccomp"),
                    help="break one invariant on purpose (self-test of the checks)")
    ap.add_argument("--show", type=int, nargs="+", metavar="I", help="print calls I... of --seed and exit")
    ap.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (canaries, config)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every worker death")
    a = ap.parse_args(argv)
    if a.seed is None:
        a.seed = secrets.randbelow(1 << 31)
    if (a.count is not None and a.count < 1) or a.start < 0 or a.seconds <= 0 or a.call_timeout <= 0 or a.watchdog <= 0:
        ap.error("--count, --seconds, --call-timeout and --watchdog must be positive, --start at least 0")
    return a


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 all invariants hold, 1 violated, 2 could not run)."""
    args = parse_args(argv)
    try:
        return run(args)
    except JailpyError as e:
        print(f"syscall_fuzz: cannot run: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
