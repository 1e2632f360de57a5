"""``jailpy seccomp``: inspect and compile seccomp policies (no kernel logic here).

``jailpy seccomp show NAME|PATH [--json]``     the resolved rules, as text or JSON
``jailpy seccomp compile NAME|PATH -o FILE``   the BPF the sandbox loads (struct sock_filter
                                               array, 8 bytes per instruction; ``-`` for stdout)

Errors raise jailpy.errors.PolicyError (seccomp.SeccompError): the main CLI prints
"jailpy: error: ..." and exits 125.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

seccomp_app = typer.Typer(
    name="seccomp",
    help="Inspect and compile seccomp policies (policies/seccomp/*.toml, profiles/seccomp/*.json).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_POLICY = typer.Argument(metavar="NAME|PATH", show_default=False,
                         help="A policy name (default, strict, a profile name) or a .toml / .json file.")


@seccomp_app.command("show", help="Print the resolved rules of a seccomp policy.\n\n"
                     "Example: jailpy seccomp show strict")
def show(
    policy: Annotated[str, _POLICY],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    from . import seccomp

    pol = seccomp.load(policy)
    if as_json:
        sys.stdout.write(json.dumps(pol.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(pol.describe())
    sys.stdout.flush()


@seccomp_app.command("compile", help="Compile a seccomp policy to the BPF program the sandbox loads.\n\n"
                     "Example: jailpy seccomp compile strict -o strict.bpf")
def compile_(
    policy: Annotated[str, _POLICY],
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE",
                                        help="Where to write the BPF (- for stdout).")],
    log: Annotated[bool, typer.Option("--log", help="The permissive variant used by --seccomp-log.")] = False,
) -> None:
    from . import seccomp

    filt = seccomp.prepare(policy, log=log)
    if output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(filt.bpf)
        sys.stdout.buffer.flush()
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        with open(fd, "wb") as f:
            f.write(filt.bpf)
    except OSError as e:
        raise seccomp.SeccompError(f"-o: cannot write {output}: {e.strerror}") from None
    print(f"{output}: {len(filt.bpf) // 8} BPF instructions, policy {filt.name} {filt.digest}"
          + (", needs a notification listener" if filt.notify else ""), file=sys.stderr)
