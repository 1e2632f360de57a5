"""``jailpy apparmor`` and ``jailpy selinux``: the profiles an administrator installs for
``--apparmor`` and ``--selinux-label`` (no kernel logic here: jailpy.lsm).

``jailpy apparmor generate [--policy P]``   print the payload profile derived from a policy
``sudo jailpy apparmor install [--policy P]...``   write and load it (and, where the kernel
                                            restricts user namespaces, jailpy's launcher)
``sudo jailpy selinux install``             install jailpy's SELinux module (jailpy_t)

Errors raise jailpy.errors.JailpyError: the main CLI prints "jailpy: error: ..." and exits 125.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

apparmor_app = typer.Typer(
    name="apparmor",
    help="AppArmor profiles for --apparmor: generate the payload profile of a policy, install it (root).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_POLICY = typer.Option("--policy", "-p", metavar="NAME|PATH",
                       help="The policy (a name from policies/, or a TOML file). Default: default.")


@apparmor_app.command("generate", help="Print the AppArmor profile jailpy derives from a policy (the program's, "
                      "for --apparmor generate). It is checked with apparmor_parser when that is installed.\n\n"
                      "Example: jailpy apparmor generate --policy judge")
def generate(policy: Annotated[Optional[str], _POLICY] = None) -> None:
    from . import mounts
    from . import policy as policy_mod
    from .lsm import apparmor

    pol = policy_mod.load(policy or "default")
    _, text = apparmor.generate(pol, mounts.prepare(pol))
    print(text, end="")


@apparmor_app.command("install", help="As root: write the payload profile of each policy to /etc/apparmor.d and "
                      "load it (apparmor_parser -r); where the kernel restricts user namespaces (Ubuntu 23.10+), also "
                      "jailpy's launcher, /usr/lib/jailpy/jailpy-launcher, and a profile that lets it, and nothing "
                      "else, create them. The sysctl stays on.\n\nExample: sudo jailpy apparmor install -p default -p judge")
def install(
    policy: Annotated[Optional[list[str]], typer.Option("--policy", "-p", metavar="NAME|PATH",
        help="A policy whose profile to install (repeatable). Default: default.")] = None,
    launcher: Annotated[Optional[bool], typer.Option("--launcher/--no-launcher",
        help="Install the launcher and its profile (default: where the kernel mediates user namespaces).")] = None,
) -> None:
    from . import policy as policy_mod
    from .lsm import apparmor

    names = policy or ["default"]
    for line in apparmor.install([(n, policy_mod.load(n)) for n in names], launcher):
        print(f"jailpy apparmor install: {line}")


selinux_app = typer.Typer(
    name="selinux",
    help="SELinux for --selinux-label: install jailpy's module (jailpy_t) on a host without a container type (root).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@selinux_app.command("install", help="As root: install jailpy's SELinux module (profiles/selinux/jailpy.cil: the "
                     "types jailpy_t and jailpy_file_t) with semodule -i.\n\nExample: sudo jailpy selinux install")
def selinux_install(
    no_reload: Annotated[bool, typer.Option("--no-reload", "-n",
        help="Into the policy store only, not loaded (semodule -n): for a host where SELinux is off.")] = False,
) -> None:
    from .lsm import selinux

    print(f"jailpy selinux install: {selinux.install(no_reload)}")
