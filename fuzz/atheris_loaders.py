#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris: libFuzzer for Python) of jailpy's input loaders.

    python fuzz/atheris_loaders.py TARGET [CORPUS_DIR...] [libFuzzer flags]
    python fuzz/atheris_loaders.py oci_json fuzz/corpus/oci_json -runs=10000
    python fuzz/atheris_loaders.py --replay TARGET [FILE_OR_DIR...]     # no atheris needed (CI)

TARGET is one of:

policy        a policy TOML file, read by jailpy.policy.load() (includes followed; the file sits
              next to base.toml, a valid policy, and loop.toml, which includes it back)
seccomp_toml  a seccomp policy TOML file, read by jailpy.seccomp.load(), then compiled to BPF
              (jailpy.seccomp.compile_bpf(), libseccomp) and its BPF checked against its rules
oci_json      an OCI/Docker seccomp profile (JSON), read by jailpy.seccomp.load(), then compiled

Each input must load into a valid object or be refused with a PolicyError (SeccompError is one)
whose message is one line; any other exception, or a multi-line message, is a crash.

Fuzzing: the corpus directories given are read; new inputs are written to the first one *only*
when it is not a seed corpus under fuzz/corpus/ (libFuzzer writes into its first directory):
by default they go to $JAILPY_FUZZ_OUT/TARGET or ~/.cache/jailpy-fuzz/TARGET, and crashes
(crash-*, with the input) to that directory too.  Without a corpus argument the seed corpus
fuzz/corpus/TARGET is used.  atheris is on PyPI (``pip install atheris``, or the ``fuzz``
extra): manylinux wheels for CPython 3.8-3.11 on x86_64 need no compiler.

Replay (``--replay``): runs every corpus file (default: fuzz/corpus/TARGET) through the same
check once, without atheris; exit 0 when none crashed, 1 otherwise.  tests/fuzz runs this in CI.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # this checkout's jailpy, when none is installed
TARGETS = ("policy", "seccomp_toml", "oci_json")
SUFFIX = {"policy": ".toml", "seccomp_toml": ".toml", "oci_json": ".json"}
BASE_POLICY = 'include = ["default"]\nhostname = "base"\ntmp_size = "64M"\n'
BASE_SECCOMP = ('known_max_nr = 469\ndefault_action = "allow"\n[[rules]]\naction = "deny"\nsyscalls = ["ptrace"]\n'
                '[[rules]]\naction = "deny"\nsyscalls = ["socket"]\nwhen = "arg0 not in {AF_UNIX, AF_INET}"\n')


def _import_loaders(instrument: bool):
    """Import the code under test (instrumented for coverage when fuzzing with atheris)."""
    if instrument:
        import atheris

        with atheris.instrument_imports():
            importlib.import_module("tomllib")  # pure Python: its branches guide the fuzzer too
            import jailpy.policy
            import jailpy.seccomp
            import jailpy.seccomp.bpf  # the package imports its loaders and compiler on first use:
            import jailpy.seccomp.loaders  # instrument them now
    else:
        import jailpy.policy
        import jailpy.seccomp
    return jailpy.policy, jailpy.seccomp


class Harness:
    """One target: ``check(data)`` loads ``data`` as that file type and raises on a crash."""

    def __init__(self, target: str, instrument: bool = False, workdir: Path | None = None) -> None:
        if target not in TARGETS:
            raise SystemExit(f"atheris_loaders: unknown target {target!r} (one of {', '.join(TARGETS)})")
        self.target = target
        self.policy, self.seccomp = _import_loaders(instrument)
        from jailpy.errors import PolicyError

        self.PolicyError = PolicyError
        if workdir is None:
            self.dir = Path(tempfile.mkdtemp(prefix=f"jailpy-atheris-{target}-"))  # 0700, ours
        else:
            self.dir = workdir
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.input = self.dir / f"input{SUFFIX[target]}"
        if target == "policy":
            (self.dir / "base.toml").write_text(BASE_POLICY)
            (self.dir / "loop.toml").write_text('include = ["./input.toml"]\n')
        elif target == "seccomp_toml":
            (self.dir / "base.toml").write_text(BASE_SECCOMP)
            (self.dir / "loop.toml").write_text('include = ["./input.toml"]\nknown_max_nr = 469\n')
        self.loaded = self.refused = 0

    def check(self, data: bytes) -> None:
        """Load ``data``; raise AssertionError (or whatever the loader raised) on a crash."""
        self.input.write_bytes(data)
        try:
            obj = (self.policy.load if self.target == "policy" else self.seccomp.load)(str(self.input))
        except self.PolicyError as e:
            self._one_line(e)
            self.refused += 1
            return
        self.loaded += 1
        if self.target == "policy":
            import msgspec

            obj.validate()
            for key in obj.__struct_fields__:  # the OS takes no path, name or variable with a NUL byte
                v = getattr(obj, key)
                assert not any(isinstance(x, str) and "\0" in x for x in (v if isinstance(v, list) else [v])), \
                    f"a loaded policy holds a NUL byte in {key}: {v!r} (Sandbox() fails on it with a traceback)"
            assert all(fd < 1 << 31 for fd in obj.pass_fd), f"pass_fd {obj.pass_fd}: not C ints (OverflowError later)"
            again = self.policy.from_dict(msgspec.to_builtins(obj), "round trip")
            assert again.digest() == obj.digest(), "a loaded policy changed in a round trip"
            return
        obj.to_dict()
        obj.describe()
        try:
            bpf = self.seccomp.compile_bpf(obj)
        except self.PolicyError as e:
            self._one_line(e)
            return
        assert bpf and len(bpf) % 8 == 0, "BPF is not a sock_filter array"
        filt = self.seccomp.Filter(bpf, obj.digest(), obj.name, notify=False)
        for r in obj.rules[:16]:
            for args in ((0,) * 6, (1, 2, 3, 4, 5, 6), ((1 << 64) - 1,) * 6):
                want, err = obj.evaluate(r.nr, args)
                d = filt.decide(r.nr, args)
                same = {"allow": d.action == "allow", "kill": d.action == "kill", "log": d.action == "log"}.get(
                    want, d.action == "errno" and d.errno == err)
                assert same, f"BPF says {d} for {r.name}{args}, the rules say {want} {err}"

    @staticmethod
    def _one_line(e: BaseException) -> None:
        msg = str(e)
        assert msg.strip() and "\n" not in msg and "\r" not in msg, f"error message is not one line: {msg!r}"

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)


def replay(target: str, paths: list[str]) -> int:
    """Run every file under ``paths`` (default: the seed corpus) through the check once."""
    h = Harness(target)
    files: list[Path] = []
    for p in map(Path, paths or [str(HERE / "corpus" / target)]):
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    crashes = 0
    try:
        for f in files:
            try:
                h.check(f.read_bytes())
            except Exception:  # noqa: BLE001 - every crash is listed, then the exit status says so
                crashes += 1
                print(f"CRASH {f}:\n{traceback.format_exc()}", file=sys.stderr)
    finally:
        h.close()
    print(f"{target}: replayed {len(files)} inputs: {h.loaded} loaded, {h.refused} refused, {crashes} crashed")
    return 1 if crashes or not files else 0


def fuzz(target: str, args: list[str]) -> None:
    """Hand over to libFuzzer (never returns normally)."""
    try:
        import atheris
    except ImportError:
        raise SystemExit("atheris_loaders: atheris is not installed (pip install atheris); "
                         f"--replay {target} runs the corpus without it") from None
    seeds = HERE / "corpus"
    dirs = [a for a in args if not a.startswith("-")]
    flags = [a for a in args if a.startswith("-")]
    out = Path(os.environ.get("JAILPY_FUZZ_OUT") or Path.home() / ".cache" / "jailpy-fuzz") / target
    if not dirs or Path(dirs[0]).resolve().is_relative_to(seeds):
        out.mkdir(parents=True, exist_ok=True)
        dirs = [str(out)] + (dirs or [str(seeds / target)])  # libFuzzer adds new inputs to the first
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        flags.append(f"-artifact_prefix={out}/")
        out.mkdir(parents=True, exist_ok=True)
    # the input files live next to the output, not in /tmp: libFuzzer ends the process with exit(),
    # so the directory is removed by the next run (a dead pid in its name), not by this one
    for old in out.parent.glob(f".work-{target}-*"):
        pid = old.name.rsplit("-", 1)[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            import shutil

            shutil.rmtree(old, ignore_errors=True)
    h = Harness(target, instrument=True, workdir=out.parent / f".work-{target}-{os.getpid()}")
    atheris.Setup([sys.argv[0], *flags, *dirs], h.check)
    atheris.Fuzz()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--replay"]:
        if len(argv) < 2:
            raise SystemExit("usage: atheris_loaders.py --replay TARGET [FILE_OR_DIR...]")
        return replay(argv[1], argv[2:])
    if not argv or argv[0] not in TARGETS:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    fuzz(argv[0], argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
