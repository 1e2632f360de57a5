"""Language presets: how a source file is named, compiled and run inside the sandbox.

Every preset works in the box directory ``/box`` (the submission's directory, writable while it
is compiled and read-only while the tests run).  A problem.toml may override any field of a
preset under ``[languages.NAME]`` (docs/judge.md).  Commands are argv lists run without a shell;
``{memory_mib}`` in a run command is replaced by the test's memory limit in MiB.
"""

from __future__ import annotations

import msgspec

from ..errors import PolicyError

BOX = "/box"
"""Where the submission's directory is, inside the sandbox."""


class Language(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One language: ``source`` (the file name the submission is saved as), ``compile`` (argv, or
    [] for none), ``run`` (argv), ``env`` (``K=V`` added for both steps), and the compile step's
    own ``pids`` (processes and threads the compiler may start)."""

    source: str
    compile: list[str] = []
    run: list[str]
    env: list[str] = []
    extensions: list[str] = []
    compile_pids: int = 128
    run_pids: int = 64
    """Processes and threads a test run may have; runtimes with threads (the JVM, node, Go) need more."""


_GO_ENV = ["GOCACHE=/tmp/go-cache", "GOPATH=/tmp/go", "GO111MODULE=off", "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false",
           "GOTOOLCHAIN=local"]

PRESETS: dict[str, Language] = {
    "c": Language(source="main.c", extensions=[".c"],
                  compile=["gcc", "-O2", "-std=gnu17", "-pipe", "-o", "main", "main.c", "-lm"], run=[f"{BOX}/main"]),
    "cpp": Language(source="main.cpp", extensions=[".cpp", ".cc", ".cxx", ".c++"],
                    compile=["g++", "-O2", "-std=gnu++17", "-pipe", "-o", "main", "main.cpp"], run=[f"{BOX}/main"]),
    "python": Language(source="main.py", extensions=[".py"],
                       compile=["python3", "-m", "py_compile", "main.py"], run=["python3", f"{BOX}/main.py"],
                       env=["PYTHONDONTWRITEBYTECODE=1"]),
    "java": Language(source="Main.java", extensions=[".java"],
                     compile=["javac", "-encoding", "UTF-8", "-J-Xss16m", "-d", ".", "Main.java"],
                     run=["java", "-Xss64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
                          "-Xmx{memory_mib}m", "-cp", BOX, "Main"],
                     compile_pids=256, run_pids=256),
    "go": Language(source="main.go", extensions=[".go"], compile=["go", "build", "-o", "main", "main.go"],
                   run=[f"{BOX}/main"], env=_GO_ENV, compile_pids=256, run_pids=128),
    "node": Language(source="main.js", extensions=[".js", ".mjs"], compile=["node", "--check", "main.js"],
                     run=["node", "--stack-size=65500", f"{BOX}/main.js"], compile_pids=64, run_pids=64),
}
"""The built-in presets (C, C++, Python, Java, Go, Node)."""

ALIASES = {"c++": "cpp", "cxx": "cpp", "py": "python", "python3": "python", "js": "node", "javascript": "node",
           "golang": "go"}


def resolve(name: str | None, source_name: str, overrides: dict[str, dict] | None = None) -> tuple[str, Language]:
    """The language called ``name`` (a preset name or alias), or the one whose extension
    ``source_name`` has when ``name`` is None, with the problem's ``overrides`` applied.
    Returns (name, Language).  Raises PolicyError naming the languages known."""
    langs = dict(PRESETS)
    for lname, fields in (overrides or {}).items():
        base = msgspec.to_builtins(langs[lname]) if lname in langs else {}
        base.update(fields)
        try:
            langs[lname] = msgspec.convert(base, Language)
        except msgspec.ValidationError as e:
            raise PolicyError(f"languages.{lname}: {e}") from None
    if name is None:
        ext = "." + source_name.rsplit(".", 1)[-1].lower() if "." in source_name else ""
        for lname, lang in langs.items():
            if ext and ext in lang.extensions:
                return lname, lang
        raise PolicyError(f"cannot tell the language of {source_name!r} from its extension: pass --lang "
                          f"({', '.join(sorted(langs))})")
    key = ALIASES.get(name.lower(), name.lower())
    if key not in langs:
        raise PolicyError(f"--lang: unknown language {name!r} (known: {', '.join(sorted(langs))})")
    return key, langs[key]


def run_argv(lang: Language, memory_bytes: int | None) -> list[str]:
    """The run command with ``{memory_mib}`` filled in (3/4 of the memory limit, at least 16 MiB:
    the JVM's heap must leave room for its own code and threads)."""
    mib = max(16, (memory_bytes or (1 << 30)) * 3 // 4 >> 20)
    return [a.replace("{memory_mib}", str(mib)) for a in lang.run]
