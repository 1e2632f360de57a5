"""Finding and reading seccomp policies: :func:`find` and :func:`known_names` (shipped names),
:func:`load`, the TOML loader (``policies/seccomp/*.toml``, with ``include``) and the
OCI/Docker JSON loader (``profiles/seccomp/*.json``; runtime-spec config-linux.md#seccomp).

Both loaders produce a checked :class:`~.language.SeccompPolicy`; every refusal is one
:class:`~.language.SeccompError` line naming the file and the key.
"""

from __future__ import annotations

import errno as _errno
import json
import os
import re
from pathlib import Path

from .. import _syscalls as sc
from .language import (
    _ERRNO_MASK, MAX64, Alt, Block, Cmp, Rule, SeccompError, SeccompPolicy, _alts_overlap, _cmp_text, _errno_name,
    parse_condition, syscall_nr,
)

_PKG = Path(__file__).resolve().parent.parent  # the jailpy package directory
POLICY_DIRS = (_PKG / "policies" / "seccomp", _PKG.parent / "policies" / "seccomp")
"""Where policy names are looked up (``NAME.toml``): the installed package's copy first."""
PROFILE_DIRS = (_PKG / "profiles" / "seccomp", _PKG.parent / "profiles" / "seccomp")
"""Where OCI/Docker-format profile names are looked up (``NAME.json``)."""

_ACTIONS = ("allow", "deny", "errno", "kill", "log")


def _shown(key: object) -> str:
    """A key or label as written when it is plain, else its repr (so a message stays one line)."""
    return key if isinstance(key, str) and re.fullmatch(r"[\w .,:/+-]+", key) else repr(key)


def _errno_value(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise SeccompError(f"{where}: expected an errno name like EPERM or a number, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and hasattr(_errno, value) and value.startswith("E"):
        n = getattr(_errno, value)
    else:
        raise SeccompError(f"{where}: expected an errno name like EPERM or a number, got {value!r}")
    if not 1 <= n <= _ERRNO_MASK:
        raise SeccompError(f"{where}: errno must be between 1 and {_ERRNO_MASK}, got {value!r}")
    return n


# ------------------------------------------------------------------ finding ----

def _is_file(p: Path) -> bool:
    """Path.is_file(), False too for a name the kernel refuses (ENAMETOOLONG, ELOOP, a NUL byte)."""
    try:
        return p.is_file()
    except (OSError, ValueError):
        return False



def _known_keys(obj: dict, known: set[str] | frozenset[str], where: object) -> None:
    """Raise SeccompError naming ``where`` for the first key of ``obj`` not in ``known``."""
    for key in obj:
        if key not in known:
            raise SeccompError(f"{where}: {_shown(key)}: unknown key (known: {', '.join(sorted(known))})")

def find(name_or_path: str) -> Path:
    """Resolve a policy name (``policies/seccomp/NAME.toml``, then ``profiles/seccomp/NAME.json``)
    or a path ending in .toml or .json.  Raises SeccompError when there is none."""
    if name_or_path == "none":
        raise SeccompError("'none' is not a policy: --seccomp none means no filter at all (the caller skips seccomp)")
    if "/" in name_or_path or name_or_path.endswith((".toml", ".json")):
        p = Path(name_or_path)
        if not _is_file(p):
            raise SeccompError(f"seccomp policy file not found: {name_or_path}")
        return p
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name_or_path):
        raise SeccompError(f"bad seccomp policy name {name_or_path!r}: use a name from policies/seccomp/ or a path")
    for dirs, ext in ((POLICY_DIRS, ".toml"), (PROFILE_DIRS, ".json")):
        for d in dirs:
            p = d / f"{name_or_path}{ext}"
            if _is_file(p):
                return p
    raise SeccompError(f"no seccomp policy named {name_or_path!r} (known: {', '.join(known_names()) or 'none'})")


def known_names() -> list[str]:
    """Names :func:`find` accepts: shipped TOML policies and JSON profiles."""
    names = {p.stem for d in POLICY_DIRS if d.is_dir() for p in d.glob("*.toml")}
    names |= {p.stem for d in PROFILE_DIRS if d.is_dir() for p in d.glob("*.json")}
    return sorted(names)


def load(name_or_path: str = "default") -> SeccompPolicy:
    """Load and check a seccomp policy by name or path (TOML, or OCI/Docker JSON by extension).

    Raises SeccompError (one line, naming the file and the key) for unknown syscall names, unknown
    keys, bad actions or errnos, unreadable conditions, overlapping rules with different actions,
    include loops and malformed OCI profiles.  OCI: config-linux.md#seccomp of the runtime-spec."""
    path = find(name_or_path)
    name = path.stem
    if path.suffix == ".json":
        return _load_oci(path, name)
    return _load_toml(path, name)


# --- TOML (policies/seccomp/*.toml, with include) ---

_TOP_KEYS = {"include", "description", "known_max_nr", "default_action", "default_errno", "report", "rules"}
_RULE_KEYS = {"group", "why", "action", "errno", "syscalls", "when"}


def _read_toml(path: Path, seen: tuple[Path, ...], state: dict) -> None:
    from ..policy import read_toml

    real = path.resolve()
    if real in seen:
        raise SeccompError(f"{path}: include loop through {real}")
    data = read_toml(path, SeccompError)
    state["sources"].append(str(path))
    _known_keys(data, _TOP_KEYS, path)
    includes = data.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise SeccompError(f"{path}: include: expected a list of policy names or relative paths")
    for inc in includes:
        if "/" in inc or inc.endswith(".toml"):
            target = path.parent / inc
            if not _is_file(target):
                raise SeccompError(f"{path}: include: file not found: {target}")
        else:
            try:
                target = find(inc)
            except SeccompError as e:
                raise SeccompError(f"{path}: include: {e}") from None
            if target.suffix != ".toml":
                raise SeccompError(f"{path}: include: {inc!r} is an OCI profile; only TOML policies can be included")
        _read_toml(target, seen + (real,), state)
    for key in ("known_max_nr", "default_action", "default_errno", "report"):
        if key in data:
            state[key] = (data[key], str(path))
    rules = data.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise SeccompError(f"{path}: rules: expected [[rules]] tables")
    file_rules: dict[int, list[Rule]] = {}
    for i, raw in enumerate(rules):
        where = f"{path}: rules[{i}]" + (f" ({_shown(raw['group'])})" if isinstance(raw.get("group"), str) else "")
        _known_keys(raw, _RULE_KEYS, where)
        action = raw.get("action")
        if action not in _ACTIONS:
            raise SeccompError(f"{where}: action: expected one of {', '.join(_ACTIONS)}, got {action!r}")
        err = _rule_errno(action, raw.get("errno"), f"{where}: errno")
        names = raw.get("syscalls")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise SeccompError(f"{where}: syscalls: expected a non-empty list of syscall names")
        when = raw.get("when")
        if isinstance(when, str):
            when = [when]
        if when is not None and (not isinstance(when, list) or not when or not all(isinstance(w, str) for w in when)):
            raise SeccompError(f"{where}: when: expected a condition string or a list of them")
        alts = None
        if when is not None:
            alts = []
            for w in when:
                alts.extend(parse_condition(w, f"{where}: when"))
        for k in ("group", "why"):
            if k in raw and not isinstance(raw[k], str):
                raise SeccompError(f"{where}: {k}: expected a string")
        block = len(state["blocks"])
        state["blocks"].append(Block(raw.get("group", ""), raw.get("why", ""), action, err, tuple(names),
                                     tuple(when or ()), str(path)))
        for n in names:
            try:
                nr = syscall_nr(n)
            except SeccompError as e:
                raise SeccompError(f"{where}: syscalls: {e}") from None
            file_rules.setdefault(nr, []).append(
                Rule(n, nr, action, err, None if alts is None else tuple(dict.fromkeys(alts)), block))
    # a file's rules for a syscall replace what its includes said about that syscall
    for nr, lst in file_rules.items():
        state["rules"][nr] = lst


def _rule_errno(action: str, value: object, where: str) -> int:
    if action == "errno":
        if value is None:
            raise SeccompError(f"{where}: action errno needs an errno (e.g. errno = \"ENOSYS\")")
        return _errno_value(value, where)
    if action == "deny":
        return _errno.EPERM if value is None else _errno_value(value, where)
    if value is not None:
        raise SeccompError(f"{where}: only deny and errno rules take an errno (this one is {action})")
    return 0


def _load_toml(path: Path, name: str) -> SeccompPolicy:
    state: dict = {"sources": [], "blocks": [], "rules": {}}
    _read_toml(path, (), state)
    src = str(path)
    if "default_action" not in state:
        raise SeccompError(f"{src}: default_action: missing (allow, deny, errno, kill or log)")
    default, dsrc = state["default_action"]
    if default not in _ACTIONS:
        raise SeccompError(f"{dsrc}: default_action: expected one of {', '.join(_ACTIONS)}, got {default!r}")
    derr_raw, esrc = state.get("default_errno", (None, src))
    derr = _rule_errno(default, derr_raw, f"{esrc}: default_errno")
    if "known_max_nr" not in state:
        raise SeccompError(f"{src}: known_max_nr: missing (the highest syscall number the policy was written for)")
    kmax, ksrc = state["known_max_nr"]
    if isinstance(kmax, bool) or not isinstance(kmax, int) or not 0 < kmax < sc.X32_SYSCALL_BIT:
        raise SeccompError(f"{ksrc}: known_max_nr: expected a syscall number, got {kmax!r}")
    report, rsrc = state.get("report", (True, src))
    if not isinstance(report, bool):
        raise SeccompError(f"{rsrc}: report: expected true or false, got {report!r}")
    rules: list[Rule] = []
    for nr in sorted(state["rules"]):
        if nr > kmax:
            r = state["rules"][nr][0]
            raise SeccompError(f"{state['blocks'][r.block].source}: syscalls: {r.name} ({nr}) is above "
                               f"known_max_nr {kmax}: raise known_max_nr after reviewing the syscalls in between")
        rules.extend(_normalize(state["rules"][nr], state["blocks"]))
    return SeccompPolicy(name, src, default, derr, kmax, report, tuple(rules), tuple(state["blocks"]),
                         tuple(dict.fromkeys(state["sources"])))


def _normalize(rules: list[Rule], blocks: list[Block]) -> list[Rule]:
    """Check one syscall's rules: no overlap between different actions; drop what an
    unconditional rule with the same action already covers."""
    for i, p in enumerate(rules):
        for q in rules[i + 1:]:
            if (p.action, p.errno) == (q.action, q.errno):
                continue
            pa = p.alternatives if p.alternatives is not None else ((),)
            qa = q.alternatives if q.alternatives is not None else ((),)
            if any(_alts_overlap(x, y) for x in pa for y in qa):
                raise SeccompError(
                    f"{blocks[q.block].source}: rules for {p.name} overlap with different actions "
                    f"({_act_text(p)} in {_block_name(blocks, p)}, {_act_text(q)} in {_block_name(blocks, q)}): "
                    "make their conditions exclusive")
    uncond = {(r.action, r.errno) for r in rules if r.alternatives is None}
    out: list[Rule] = []
    for r in rules:
        if r.alternatives is not None and (r.action, r.errno) in uncond:
            continue
        if r.alternatives is None and any(o.alternatives is None and (o.action, o.errno) == (r.action, r.errno)
                                          for o in out):
            continue
        out.append(r)
    return out


def _act_text(r: Rule) -> str:
    return f"{r.action} {_errno_name(r.errno)}" if r.action in ("deny", "errno") else r.action


def _block_name(blocks: list[Block], r: Rule) -> str:
    b = blocks[r.block]
    return f"group {b.group!r}" if b.group else f"rules[{r.block}]"


# --- OCI / Docker JSON (runtime-spec config-linux.md#seccomp; Docker's profile format) ---

_OCI_TOP = {"defaultAction", "defaultErrnoRet", "architectures", "archMap", "syscalls", "flags",
            "listenerPath", "listenerMetadata"}
_OCI_SYSCALL = {"names", "name", "action", "errnoRet", "args", "comment", "includes", "excludes"}
_OCI_ARG = {"index", "value", "valueTwo", "op"}
_OCI_OPS = {"SCMP_CMP_NE": "!=", "SCMP_CMP_LT": "<", "SCMP_CMP_LE": "<=", "SCMP_CMP_EQ": "==",
            "SCMP_CMP_GE": ">=", "SCMP_CMP_GT": ">", "SCMP_CMP_MASKED_EQ": "&=="}
_OCI_ARCHES = {"SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X32": "x32"}
_OCI_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
              "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"}


def _oci_action(action: object, errno_ret: object, where: str) -> tuple[str, int]:
    """SCMP_ACT_* -> (jailpy action, errno).  ERRNO is a reported denial, except ENOSYS, which
    means "pretend the syscall does not exist" and stays in BPF unreported; KILL*, TRAP -> kill
    (jailpy does not deliver SIGSYS to a handler); TRACE (no tracer here) -> ENOSYS as the kernel
    does without a tracer; NOTIFY -> a reported EPERM (jailpy is the listener)."""
    if errno_ret is not None and (isinstance(errno_ret, bool) or not isinstance(errno_ret, int)):
        raise SeccompError(f"{where}: errnoRet: expected a number, got {errno_ret!r}")
    if action == "SCMP_ACT_ALLOW":
        return "allow", 0
    if action == "SCMP_ACT_ERRNO":
        err = _errno.EPERM if errno_ret is None else _errno_value(errno_ret, f"{where}: errnoRet")
        return ("errno" if err == _errno.ENOSYS else "deny"), err
    if action in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP"):
        return "kill", 0
    if action == "SCMP_ACT_LOG":
        return "log", 0
    if action == "SCMP_ACT_TRACE":
        return "errno", _errno.ENOSYS
    if action == "SCMP_ACT_NOTIFY":
        return "deny", _errno.EPERM
    raise SeccompError(f"{where}: unknown action {action!r} "
                       "(SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_ACT_KILL_PROCESS, ...)")


def _kernel_at_least(spec: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v)[:2])

    return parts(os.uname().release) >= parts(spec)


def _load_oci(path: Path, name: str) -> SeccompPolicy:
    src = str(path)
    try:
        data = json.loads(path.read_bytes())
    except OSError as e:
        raise SeccompError(f"{src}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise SeccompError(f"{src}: not valid JSON: {e}") from None
    except RecursionError:
        raise SeccompError(f"{src}: not valid JSON: arrays or objects nested too deeply") from None
    if not isinstance(data, dict):
        raise SeccompError(f"{src}: expected a JSON object with defaultAction and syscalls")
    _known_keys(data, _OCI_TOP, src)
    if "defaultAction" not in data:
        raise SeccompError(f"{src}: defaultAction: missing")
    default, derr = _oci_action(data["defaultAction"], data.get("defaultErrnoRet"), f"{src}: defaultAction")
    notes = []
    arches = data.get("architectures") or []
    if not isinstance(arches, list):
        raise SeccompError(f"{src}: architectures: expected a list of SCMP_ARCH_* names")
    if "archMap" in data:
        amap = data["archMap"]
        if not isinstance(amap, list) or not all(isinstance(a, dict) for a in amap):
            raise SeccompError(f"{src}: archMap: expected a list of objects")
        for a in amap:
            subs = a.get("subArchitectures") or []
            if not isinstance(subs, list):
                raise SeccompError(f"{src}: archMap: subArchitectures: expected a list of SCMP_ARCH_* names")
            arches = arches + [a.get("architecture")] + subs
    if not isinstance(arches, list) or not all(isinstance(a, str) for a in arches):
        raise SeccompError(f"{src}: architectures: expected a list of SCMP_ARCH_* names")
    if arches:
        if "SCMP_ARCH_X86_64" not in arches:
            raise SeccompError(f"{src}: architectures: the profile does not cover SCMP_ARCH_X86_64, "
                               "the only architecture jailpy runs")
        others = sorted(set(arches) - {"SCMP_ARCH_X86_64"})
        if others:
            notes.append(f"architectures {', '.join(others)} listed by the profile are refused (x86_64 only)")
    flags = data.get("flags") or []
    if not isinstance(flags, list) or any(not isinstance(f, str) or f not in _OCI_FLAGS for f in flags):
        raise SeccompError(f"{src}: flags: expected SECCOMP_FILTER_FLAG_* names, got {flags!r}")
    if flags:
        notes.append(f"flags {', '.join(flags)} ignored (jailpy chooses its own)")
    if data.get("listenerPath"):
        notes.append("listenerPath ignored: jailpy itself answers SCMP_ACT_NOTIFY (EPERM, reported)")
    syscalls = data.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise SeccompError(f"{src}: syscalls: expected a list")
    blocks: list[Block] = []
    per_nr: dict[int, list[Rule]] = {}
    for i, entry in enumerate(syscalls):
        where = f"{src}: syscalls[{i}]"
        if not isinstance(entry, dict):
            raise SeccompError(f"{where}: expected an object")
        _known_keys(entry, _OCI_SYSCALL, where)
        names = entry.get("names", [entry["name"]] if "name" in entry else None)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise SeccompError(f"{where}: names: expected a non-empty list of syscall names")
        if "action" not in entry:
            raise SeccompError(f"{where}: action: missing")
        action, err = _oci_action(entry["action"], entry.get("errnoRet"), f"{where}: action")
        if not _oci_applies(entry, where):
            continue
        alts, texts = _oci_args(entry.get("args") or [], f"{where}: args")
        block = len(blocks)
        comment = entry.get("comment", "")
        blocks.append(Block(f"syscalls[{i}]", comment if isinstance(comment, str) else "", action, err,
                            tuple(names), tuple(texts), src))
        for n in names:
            try:
                nr = syscall_nr(n)
            except SeccompError as e:
                raise SeccompError(f"{where}: names: {e}") from None
            per_nr.setdefault(nr, []).append(Rule(n, nr, action, err, alts, block))
    rules: list[Rule] = []
    for nr in sorted(per_nr):
        # like runc: later entries for the same syscall add to earlier ones; conflicts are errors
        rules.extend(_normalize(per_nr[nr], blocks))
    # runc's rule for the ENOSYS stub: with a default other than allow, syscalls newer than the
    # newest one the profile names get ENOSYS (libc falls back), not the default denial
    kmax = None if default == "allow" or not per_nr else max(per_nr)
    return SeccompPolicy(name, src, default, derr, kmax, True, tuple(rules), tuple(blocks), (src,), tuple(notes))


def _oci_applies(entry: dict, where: str) -> bool:
    """Docker's includes/excludes: caps (the sandbox has none), arches, minKernel."""
    for key, want in (("includes", True), ("excludes", False)):
        cond = entry.get(key)
        if cond is None:
            continue
        if not isinstance(cond, dict) or set(cond) - {"caps", "arches", "minKernel"}:
            raise SeccompError(f"{where}: {key}: expected an object with caps, arches or minKernel")
        for k in ("caps", "arches"):
            if cond.get(k) is not None and not (isinstance(cond[k], list) and all(isinstance(x, str) for x in cond[k])):
                raise SeccompError(f"{where}: {key}: {k}: expected a list of names")
        hits = []
        if cond.get("caps"):
            hits.append(False)  # the sandbox holds no capabilities
        if cond.get("arches"):
            hits.append(any(a in ("amd64", "x86_64", "SCMP_ARCH_X86_64") for a in cond["arches"]))
        if cond.get("minKernel"):
            if not isinstance(cond["minKernel"], str) or not re.match(r"^\d+\.\d+", cond["minKernel"]):
                raise SeccompError(f"{where}: {key}: minKernel: expected a version like \"5.8\"")
            hits.append(_kernel_at_least(cond["minKernel"]))
        if want and not all(hits):
            return False
        if not want and hits and any(hits):
            return False
    return True


def _oci_args(args: object, where: str) -> tuple[tuple[Alt, ...] | None, list[str]]:
    """OCI args: ANDed, except that (as runc does) when an argument index repeats, each
    comparison becomes a rule of its own (ORed): libseccomp compares an argument once per rule."""
    if not isinstance(args, list):
        raise SeccompError(f"{where}: expected a list")
    if not args:
        return None, []
    cmps: list[Cmp] = []
    for j, a in enumerate(args):
        w = f"{where}[{j}]"
        if not isinstance(a, dict):
            raise SeccompError(f"{w}: expected an object with index, value, op")
        _known_keys(a, _OCI_ARG, w)
        idx, op = a.get("index"), a.get("op")
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx <= 5:
            raise SeccompError(f"{w}: index: expected 0 to 5, got {idx!r}")
        if not isinstance(op, str) or op not in _OCI_OPS:
            raise SeccompError(f"{w}: op: expected one of {', '.join(_OCI_OPS)}, got {op!r}")
        vals = []
        for key in ("value", "valueTwo"):
            v = a.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX64:
                raise SeccompError(f"{w}: {key}: expected an unsigned 64-bit number, got {v!r}")
            vals.append(v)
        if op == "SCMP_CMP_MASKED_EQ" and vals[1] & ~vals[0]:
            raise SeccompError(f"{w}: valueTwo {vals[1]:#x} has bits outside the mask {vals[0]:#x}: never matches")
        cmps.append((idx, _OCI_OPS[op], vals[0], vals[1] if op == "SCMP_CMP_MASKED_EQ" else 0))
    indices = [c[0] for c in cmps]
    if len(set(indices)) < len(indices):
        alts = tuple(((c,) for c in cmps))
        return tuple(alts), [_cmp_text(c) for c in cmps]
    alt = tuple(sorted(cmps))
    return (alt,), [" and ".join(_cmp_text(c) for c in alt)]

