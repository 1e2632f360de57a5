"""jailpy: run untrusted programs in a rootless Linux sandbox.

The public API::

    import jailpy
    result = jailpy.run(["python3", "-c", "print(1)"], capture_output=True)
    result.verdict, result.exit_code, result.stdout

``Policy`` says what the sandbox allows (``jailpy.policy.load("default")`` reads a TOML
policy), ``Sandbox(policy)`` prepares it once and ``Sandbox.run(argv)`` runs a program,
returning a ``Result``.  Errors are ``JailpyError`` subclasses (exit status 125 in the CLI).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import HostError, JailpyError, PolicyError, SandboxSetupError

__all__ = [
    "HostError", "JailpyError", "Policy", "PolicyError", "Result", "Sandbox", "SandboxSetupError", "Verdict", "run",
    "DEVNULL", "PIPE", "__version__", "judge", "Judge",
]

_LAZY = {"Policy": "policy", "Result": "result", "Verdict": "result", "Sandbox": "sandbox", "run": "sandbox",
         "DEVNULL": "stdio", "PIPE": "stdio",
         "Judge": "judge"}


def __getattr__(name: str):
    """Load the rest on first use (PEP 562): the sandbox's side of the fork (jailpy.forkserver)
    imports this package and must not pull in the policy and result code."""
    import importlib

    if name == "judge":  # the package jailpy.judge, callable as jailpy.judge(problem, source) (see there)
        return importlib.import_module(".judge", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in ("audit", "cgroups", "child", "cli", "errors", "mounts", "policy", "registry", "result", "rlimits",
                "seccomp", "sandbox", "pool", "slots", "service", "watch", "verdict", "stdio", "launch", "rootfs",
                "userns"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'jailpy' has no attribute {name!r}")
