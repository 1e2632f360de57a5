"""``jailpy audit``: run the escape probes (jailpy.audit) on this host and print a scorecard.

Registered in jailpy/cli.py with ``app.command("audit")(audit_command)``.  Exit status: 0 when
no probe got through, 1 when any did (NOT BLOCKED), 125 for jailpy's own errors (a bad policy,
a host that cannot build the sandbox, a probe that could not run).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Optional

import typer

STYLE = {"blocked": "green", "NOT BLOCKED": "bold red", "skipped": "yellow", "error": "bold magenta"}


def audit_command(
    policy: Annotated[Optional[str], typer.Option("--policy", "-p", metavar="NAME|PATH",
        help="Audit this policy (a name from policies/, or a TOML file). Default: default.")] = None,
    seccomp: Annotated[Optional[str], typer.Option("--seccomp", metavar="NAME|PATH|none",
        help="Use this seccomp policy instead of the policy's (default, strict, a file, or none).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON list of the probes' outcomes.")] = False,
    only: Annotated[Optional[str], typer.Option("--only", metavar="ID,...",
        help="Run only these probes (ids as listed by --json).")] = None,
    canary_dir: Annotated[Optional[str], typer.Option("--canary-dir", metavar="DIR",
        help="Make the host-side canaries under DIR (default: a new temporary directory). A policy that "
        "binds DIR writable is reported NOT BLOCKED.")] = None,
) -> None:
    """Try every known escape technique from inside a sandbox on this machine and kernel, and
    print which layer stopped each one.

    Exit status: 0 when nothing got through, 1 when any probe did, 125 for jailpy's own errors.

    Host files are never touched: the probes aim at canaries in a temporary directory.

    Probes that need a cgroup are skipped when none can be had (rootless without JAILPY_CGROUP_PARENT)."""
    from . import audit
    from . import policy as policy_mod

    pol = policy_mod.load(policy or "default")
    if seccomp is not None:
        pol = pol.replace(seccomp=seccomp)
    probes = audit.select_probes([i.strip() for i in only.split(",") if i.strip()] if only else None)
    t0 = time.monotonic()
    outcomes = audit.Auditor(pol, canary_dir=canary_dir).run(probes)
    seconds = time.monotonic() - t0
    if json_out:
        print(json.dumps([o.to_dict() for o in outcomes], indent=2))
    else:
        _print_table(outcomes, pol, policy or "default", seconds)
    through = [o for o in outcomes if o.status == audit.NOT_BLOCKED]
    errors = [o for o in outcomes if o.status == audit.ERROR]
    if through:
        raise typer.Exit(1)
    if errors:
        print(f"jailpy: error: {len(errors)} probe(s) could not run: "
              + "; ".join(f"{o.id}: {o.detail}" for o in errors[:3]), file=sys.stderr)
        raise typer.Exit(125)


def _layer_text(o) -> str:
    text = ", ".join(o.layers)
    if o.below:
        if o.below["status"] == "NOT BLOCKED":
            text += " (nothing below)"
        elif o.below["status"] == "blocked":
            text += " > " + ", ".join(o.below["layers"])
    return text


def _print_table(outcomes, pol, name: str, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    t = Table(box=None, show_edge=False, pad_edge=False)
    for col in ("PROBE", "CATEGORY", "RESULT", "LAYER", "DETAIL"):
        t.add_column(col, overflow="fold" if col == "DETAIL" else "ellipsis", no_wrap=col != "DETAIL")
    for o in outcomes:
        t.add_row(o.id, o.category, Text(o.status, style=STYLE.get(o.status, "")), _layer_text(o), o.detail)
    console.print(t)
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in STYLE}
    bad = [o.id for o in outcomes if o.status == "NOT BLOCKED"]
    console.print(
        f"jailpy audit: {len(outcomes)} probes, policy {name} ({pol.digest()[:15]}), seccomp {pol.seccomp}: "
        f"{counts['blocked']} blocked, {counts['NOT BLOCKED']} NOT BLOCKED"
        + (f" ({', '.join(bad)})" if bad else "")
        + f", {counts['skipped']} skipped, {counts['error']} errors in {seconds:.1f} s"
        + ("  (LAYER: what stopped it > what stops it without seccomp)" if any(o.below for o in outcomes) else ""),
        style="bold red" if bad else "bold green")
