"""``jailpy audit``: run the escape probes (jailpy.audit) on this host and print a scorecard.

Registered in jailpy/cli.py with ``app.command("audit")(audit_command)``.  Exit status (EXIT_*):
0 every probe ran and none got through; 1 at least one got through (NOT BLOCKED); 2 none got
through but some were skipped (they never ran: a gate must not count them as blocked); 125
jailpy's own errors (a bad policy, a host that cannot build the sandbox, a probe that could not
run).  When several apply, the first of 1, 125, 2 wins.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Optional

import typer

EXIT_BLOCKED, EXIT_NOT_BLOCKED, EXIT_SKIPPED, EXIT_ERROR = 0, 1, 2, 125
WIDE = 140
"""Columns from which the table has one line per probe (DETAIL in its own column); below, each
probe's DETAIL is wrapped on the lines under it."""
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

    Exit status: 0 when every probe ran and none got through, 1 when any got through, 2 when none
    got through but some were skipped (never ran), 125 for jailpy's own errors.

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
    from .cli_text import clean, one_line

    if json_out:
        print(json.dumps(clean([o.to_dict() for o in outcomes]), indent=2))
    else:
        _print_table(outcomes, pol, policy or "default", seconds)
    through = [o for o in outcomes if o.status == audit.NOT_BLOCKED]
    errors = [o for o in outcomes if o.status == audit.ERROR]
    skipped = [o for o in outcomes if o.status == audit.SKIPPED]
    if through:
        raise typer.Exit(EXIT_NOT_BLOCKED)
    if errors:
        print(one_line(f"jailpy: error: {len(errors)} probe(s) could not run: "
                        + "; ".join(f"{o.id}: {o.detail}" for o in errors[:3])), file=sys.stderr)
        raise typer.Exit(EXIT_ERROR)
    if skipped:
        print(one_line(f"jailpy audit: nothing got through, but {len(skipped)} probe(s) were skipped and never ran "
                        f"({', '.join(o.id for o in skipped[:5])}{', ...' if len(skipped) > 5 else ''}): exit "
                        f"{EXIT_SKIPPED}"), file=sys.stderr)
        raise typer.Exit(EXIT_SKIPPED)


def _layer_text(o) -> str:
    text = ", ".join(o.layers)
    if o.below:
        if o.below["status"] == "NOT BLOCKED":
            text += " (nothing below)"
        elif o.below["status"] == "blocked":
            text += " > " + ", ".join(o.below["layers"])
    return text


def _width() -> int:
    """The table's width: $COLUMNS when set (also when stdout is not a terminal: ``COLUMNS=80
    jailpy audit | less``), else the terminal's, else 200 for a file or a pipe."""
    import shutil

    cols = os.environ.get("COLUMNS", "")
    if cols.isdigit() and int(cols) > 0:
        return int(cols)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return 200


def _print_table(outcomes, pol, name: str, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    width = _width()
    console = Console(highlight=False, width=width)
    if width >= WIDE:
        t = Table(box=None, show_edge=False, pad_edge=False)
        for col in ("PROBE", "CATEGORY", "RESULT", "LAYER", "DETAIL"):
            t.add_column(col, overflow="fold" if col == "DETAIL" else "ellipsis", no_wrap=col != "DETAIL")
        for o in outcomes:
            t.add_row(o.id, o.category, Text(o.status, style=STYLE.get(o.status, "")), _layer_text(o), o.detail)
        console.print(t)
    else:
        _print_narrow(console, outcomes, width)
    counts = {s: sum(1 for o in outcomes if o.status == s) for s in STYLE}
    bad = [o.id for o in outcomes if o.status == "NOT BLOCKED"]
    console.print(
        f"jailpy audit: {len(outcomes)} probes, policy {name} ({pol.digest()[:15]}), seccomp {pol.seccomp}: "
        f"{counts['blocked']} blocked, {counts['NOT BLOCKED']} NOT BLOCKED"
        + (f" ({', '.join(bad)})" if bad else "")
        + f", {counts['skipped']} skipped, {counts['error']} errors in {seconds:.1f} s"
        + ("  (LAYER: what stopped it > what stops it without seccomp)" if any(o.below for o in outcomes) else ""),
        style="bold red" if bad else "bold green")


def _print_narrow(console, outcomes, width: int) -> None:
    """The table for fewer than WIDE columns: RESULT first (never cut), then PROBE, CATEGORY and
    LAYER, and the DETAIL wrapped on the lines below, indented under PROBE."""
    import textwrap

    from rich.text import Text

    res_w = max(len("RESULT"), *(len(o.status) for o in outcomes)) if outcomes else 11
    probe_w = max(len("PROBE"), *(len(o.id) for o in outcomes)) if outcomes else 5
    cat_w = max(len("CATEGORY"), *(len(o.category) for o in outcomes)) if outcomes else 8
    indent = res_w + 2
    layer_at = indent + probe_w + 2 + cat_w + 2
    if layer_at + 12 > width:  # too narrow for LAYER beside them: it goes below, with DETAIL
        layer_at = None
    header = f"{'RESULT':<{res_w}}  {'PROBE':<{probe_w}}  {'CATEGORY':<{cat_w}}" + ("  LAYER" if layer_at else "")
    console.print(header, no_wrap=True, overflow="ignore", crop=False)
    room = max(20, width - indent)
    for o in outcomes:
        line = Text(f"{o.status:<{res_w}}", style=STYLE.get(o.status, ""))
        line.append(f"  {o.id:<{probe_w}}  {o.category:<{cat_w}}")
        below = []
        layer = _layer_text(o)
        if layer_at:
            lw = textwrap.wrap(layer, max(12, width - layer_at), break_on_hyphens=False) or [""]
            line.append("  " + lw[0])
            below += [" " * (layer_at - indent) + x for x in lw[1:]]
        elif layer:
            below += textwrap.wrap("layer: " + layer, room, break_on_hyphens=False)
        console.print(line, no_wrap=True, overflow="ignore", crop=False)
        below += textwrap.wrap(o.detail, room, break_on_hyphens=False, break_long_words=True)
        for x in below:
            console.print(" " * indent + x, no_wrap=True, overflow="ignore", crop=False, highlight=False)
