"""The seccomp side of ``allow_nesting``: a filter under which the program may build a sandbox of
its own (a nested jailpy, bubblewrap, a container runtime).

:func:`allow_nesting` takes a loaded policy and returns it with the calls a sandbox's set-up
makes allowed, whatever the policy said for them:

* the namespace calls: ``unshare`` and ``clone`` with CLONE_NEW* flags, ``setns``;
* the mount calls, old and new API: ``mount``, ``umount2``, ``pivot_root``, ``open_tree``,
  ``move_mount``, ``mount_setattr``, ``fsopen``, ``fsconfig``, ``fsmount``, ``fspick``;
* ``openat2``, with which a sandbox resolves paths safely (RESOLVE_IN_ROOT);
* ``keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`` only: a new, empty, anonymous session keyring
  (what a nested jailpy's PID 1 joins, keyrings(7)); every other keyctl keeps its rule.

These act only inside user namespaces the program makes itself (it holds no capability in the
sandbox's own: mount(2) and unshare(2) need CAP_SYS_ADMIN there), and the sandbox's
``user.max_user_namespaces`` bounds how many (:mod:`jailpy.ucounts`).  What the program gains
is kernel attack surface: the mount and namespace code an unprivileged user on a normal host
can reach too.  See SECURITY.md, "Nesting".
"""

from __future__ import annotations

from dataclasses import replace

from .language import Block, Rule, SeccompPolicy, parse_condition, syscall_nr

NAMESPACE_CALLS = ("unshare", "clone", "setns")
MOUNT_CALLS = ("mount", "umount2", "pivot_root", "open_tree", "move_mount", "mount_setattr", "fsopen",
               "fsconfig", "fsmount", "fspick")
PATH_CALLS = ("openat2",)
"""openat2(2): a nested sandbox resolves every mount destination with RESOLVE_IN_ROOT (the
policies answer it ENOSYS because its mode, in memory, cannot be checked for S_ISUID: a setuid
file so made in a writable bind is cleared after the run, jailpy.setid)."""
KEYCTL_JOIN_NEW = "arg0 == 1 and arg1 == 0"
"""keyctl(KEYCTL_JOIN_SESSION_KEYRING (1), NULL): join a new anonymous session keyring."""
SOURCE = "allow_nesting"


def allow_nesting(policy: SeccompPolicy) -> SeccompPolicy:
    """``policy`` with the calls a nested sandbox needs allowed (see the module docstring); its
    digest changes with it.  Raises SeccompError only for a syscall name this libseccomp lacks."""
    names = NAMESPACE_CALLS + MOUNT_CALLS + PATH_CALLS
    blocks = list(policy.blocks)
    bi = len(blocks)
    blocks.append(Block("nesting", "allow_nesting: the program may set up a sandbox of its own (namespaces and "
                        "mounts, in user namespaces it makes)", "allow", 0, names, (), SOURCE))
    rules = [r for r in policy.rules if r.name not in names]
    rules += [Rule(n, syscall_nr(n), "allow", 0, None, bi) for n in names]
    keyctl = [r for r in rules if r.name == "keyctl"]
    if all(r.alternatives is None for r in keyctl):  # else the policy's own conditions stand
        ki = len(blocks)
        blocks.append(Block("nesting", "allow_nesting: a nested sandbox's PID 1 joins a new, empty session keyring",
                            "allow", 0, ("keyctl",), (KEYCTL_JOIN_NEW,), SOURCE))
        rules = [r for r in rules if r.name != "keyctl"]
        rules.append(Rule("keyctl", syscall_nr("keyctl"), "allow", 0, tuple(parse_condition(KEYCTL_JOIN_NEW)), ki))
        other = tuple(parse_condition("arg0 != 1") + parse_condition("arg1 != 0"))
        rules += [replace(r, alternatives=other) for r in keyctl]
    return replace(policy, rules=tuple(rules), blocks=tuple(blocks),
                   notes=policy.notes + ("allow_nesting: namespaces and mounts allowed",))
