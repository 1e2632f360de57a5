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
from .policy import Policy
from .result import Result, Verdict

__all__ = [
    "HostError", "JailpyError", "Policy", "PolicyError", "Result", "Sandbox", "SandboxSetupError", "Verdict", "run",
    "DEVNULL", "PIPE", "__version__",
]


def __getattr__(name: str):  # the supervisor pulls in more modules: load it on first use
    if name in ("Sandbox", "run", "DEVNULL", "PIPE"):
        from . import supervisor

        return getattr(supervisor, name)
    raise AttributeError(f"module 'jailpy' has no attribute {name!r}")
