"""Hypothesis strategies and a small TOML writer for the loader property tests (tests/fuzz/).

Values are generated in two flavours mixed together: *plausible* ones near what a policy
really holds (sizes like "64M", paths, host names, syscall names, conditions) so the checks deep
inside the loaders are reached, and *arbitrary* TOML/JSON values (any type, nesting, unicode,
control characters, huge integers, nan/inf) for everything a loader must refuse cleanly.
"""

from __future__ import annotations

import json
import math
import re

from hypothesis import strategies as st

import msgspec

from jailpy.policy import Policy

# ------------------------------------------------------------------ TOML writer ----

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_str(s: str) -> str:
    """A TOML basic string (every control character escaped)."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\u{o:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else toml_str(k)


def toml_value(v: object) -> str:
    """One TOML value, inline form (arrays and inline tables nest)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v) if ("e" in repr(v) or "." in repr(v)) else repr(v) + ".0"
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict) -> str:
    """A TOML document of ``key = value`` lines (tables inline); None values (no TOML form) are left out."""
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in doc.items() if v is not None)


# ------------------------------------------------------------------ generic values ----

def chance(p: float) -> st.SearchStrategy[bool]:
    """True with probability about ``p`` (hypothesis draws the ends of a range more often than the
    middle, so the True band sits inside it)."""
    return st.integers(0, 999).map(lambda n: 300 <= n < 300 + int(p * 1000))


text = st.text(max_size=24)
weird_text = st.one_of(
    text,
    st.text(alphabet=st.characters(codec="utf-8", categories=("Cc", "Zs", "Po", "Sm", "Nd", "Lu")), max_size=12),
    st.sampled_from(["", " ", "\x00", "\n", "a\nb", "/", "..", "/..", "-", "--help", "\u202e", "é", "\ud7ff",
                     "\t64M", "∞", "１２", "0x10", "1e3", "1_000", "+5", "-0", "nan", "inf"]),
)
big_int = st.one_of(st.integers(-10, 70000), st.integers(-(2 ** 70), 2 ** 70),
                    st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 32, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 64,
                                     -(2 ** 63)]))
floats = st.floats(allow_nan=True, allow_infinity=True)
scalar = st.one_of(weird_text, big_int, floats, st.booleans())
value = st.recursive(scalar, lambda c: st.lists(c, max_size=4) | st.dictionaries(weird_text, c, max_size=3),
                     max_leaves=8)
json_value = st.recursive(st.one_of(weird_text, big_int, st.floats(allow_nan=False, allow_infinity=False),
                                    st.booleans(), st.none()),
                          lambda c: st.lists(c, max_size=4) | st.dictionaries(weird_text, c, max_size=3),
                          max_leaves=10)

# ------------------------------------------------------------------ policy fields ----

sizes = st.one_of(st.sampled_from(["64M", "1G", "1.5G", "512k", "1KiB", "8M", "7M", "63k", "0", "-1M", "1X", "M",
                                   "256m", " 64 M ", "1T", "9999999T", "64MB", "1e3M"]),
                  st.integers(-5, 1 << 45), weird_text)
paths = st.one_of(st.sampled_from(["/tmp", "/etc/hostname", "/nonexistent/jailpy-fuzz", "/tmp:/x", "/tmp:x", ":/x",
                                   "/tmp:/proc/x", "/tmp:/", "relative", "./x", "/tmp::/x", "/tmp:/x:ro", "/tmp\x00x",
                                   "/tmp:/x\x00", "/etc/hostname:/h"]), weird_text)
FIELD_VALUES = {
    "rootfs": st.one_of(st.none(), paths),
    "image": st.one_of(st.none(), paths, st.sampled_from(["oci:/nonexistent/img", "oci:/tmp:latest", "docker-archive:x.tar",
                                                           "docker://busybox", "oci:", "docker-archive:"])),
    "workdir": st.one_of(st.none(), paths),
    "cwd": st.booleans(),
    "bind": st.lists(paths, max_size=3),
    "ro_bind": st.lists(paths, max_size=3),
    "tmpfs": st.lists(st.one_of(st.sampled_from(["/scratch", "/scratch:64M", "/x:0", "rel:1M", "/y:lots"]), paths),
                      max_size=3),
    "tmp_size": sizes,
    "hide": st.lists(st.one_of(st.sampled_from(["/home", "/", "//", "rel", "/srv/"]), paths), max_size=3),
    "hostname": st.one_of(st.sampled_from(["jailpy", "box1", "a" * 64, "a" * 63, "-x", "x-", "a.b", "a..b", ""]),
                          weird_text),
    "env": st.lists(st.one_of(st.sampled_from(["A=B", "A=", "=B", "NOEQ", "1A=x", "_=_", "A=\x00"]), weird_text),
                    max_size=3),
    "env_pass": st.lists(st.one_of(st.sampled_from(["HOME", "A B", "1X", ""]), weird_text), max_size=3),
    "pass_fd": st.lists(big_int, max_size=3),
    "uid": st.one_of(st.none(), big_int),
    "gid": st.one_of(st.none(), big_int),
    "id_map": st.one_of(st.sampled_from(["auto", "single", "range", "many"]), weird_text),
    "network": st.one_of(st.sampled_from(["none", "host", "user", "bridge", "bridge:ci", "bridge:", "bridge:Big",
                                          "bridge:abcdefghijkl"]), weird_text),
    "allow_host": st.lists(st.one_of(st.sampled_from(["pypi.org", "pypi.org:443", "*.example.org", "*.org", "a..b",
                                                      "[a.b]", "127.0.0.1", "0x7f.1", "ïdn.test", "a.b:0",
                                                      "a.b:65536", "A.B.", ""]), weird_text), max_size=3),
    "allow_net": st.lists(st.one_of(st.sampled_from(["10.0.0.0/8:5432", "10.0.0.0/8", "192.0.2.7", "::1/128",
                                                     "[2001:db8::/32]:443", "10.0.0.0/33", "x", ""]), weird_text),
                          max_size=3),
    "publish": st.lists(st.one_of(st.sampled_from(["8080:80", "0.0.0.0:8080:80/udp", "[::1]:8080:80", "80",
                                                   "8080:80/sctp", "x:1:2"]), weird_text), max_size=3),
    "resolver": st.one_of(st.none(), st.sampled_from(["192.0.2.53", "192.0.2.53:5353", "[2001:db8::53]:53",
                                                      "dns.example", "1.2.3.4:0"]), weird_text),
    "wall_time": st.one_of(st.none(), floats, big_int),
    "memory": st.one_of(st.none(), sizes),
    "pids": st.one_of(st.none(), big_int),
    "cpu_weight": st.one_of(st.none(), big_int, st.sampled_from([0, 1, 100, 10000, 10001])),
    "io_weight": st.one_of(st.none(), big_int, st.sampled_from([0, 1, 10000, 10001])),
    "io_read_bps": st.one_of(st.none(), sizes),
    "io_write_bps": st.one_of(st.none(), sizes),
    "io_read_iops": st.one_of(st.none(), big_int),
    "io_write_iops": st.one_of(st.none(), big_int),
    "cpus": st.one_of(st.none(), floats, big_int),
    "cpuset": st.one_of(st.none(), st.sampled_from(["0", "0-1", "0-1,3", "1-0", "0,,1", "99999", "a"]), weird_text),
    "cpu_time": st.one_of(st.none(), floats, big_int),
    "output_limit": st.one_of(st.none(), sizes),
    "fsize": st.one_of(st.none(), sizes),
    "nofile": st.one_of(st.none(), big_int),
    "stack": st.one_of(st.none(), sizes),
    "max_inotify_instances": st.one_of(big_int, st.sampled_from([0, 16, 2 ** 31 - 1, 2 ** 31])),
    "max_inotify_watches": big_int,
    "max_fanotify_groups": big_int,
    "max_fanotify_marks": big_int,
    "max_user_namespaces": st.one_of(big_int, st.sampled_from([0, 1, -1])),
    "sigpending": st.one_of(big_int, floats),
    "msgqueue": sizes,
    "pty_max": st.one_of(big_int, st.sampled_from([0, 64, 1 << 20, (1 << 20) + 1])),
    "cgroup_parent": st.one_of(st.none(), st.sampled_from(["/judge", "judge", "/../x", "/a/./b", "/", "//x"]),
                               weird_text),
    "no_cgroup": st.booleans(),
    "seccomp": st.one_of(st.sampled_from(["default", "strict", "none", "docker-like", "nope", "", "../x",
                                          "/nonexistent.json"]), weird_text),
    "seccomp_log": st.booleans(),
    "landlock": st.one_of(st.sampled_from(["auto", "on", "off", "yes", ""]), weird_text),
    "apparmor": st.one_of(st.sampled_from(["off", "generate", "jailpy-payload-0123456789ab", "a b", "/x", ""]),
                          weird_text),
    "selinux_label": st.one_of(st.sampled_from(["off", "auto", "system_u:system_r:jailpy_t",
                                                "u:r:t:s0:c1,c2", "u:r", "a b:c:d", ""]), weird_text),
    "allow_nesting": st.one_of(st.booleans(), st.sampled_from([0, 1, "yes"])),
}
assert set(FIELD_VALUES) == set(Policy.__struct_fields__), "a Policy field has no strategy: add it"


@st.composite
def policy_dicts(draw, extra_keys: bool = True) -> dict:
    """A dict of Policy keys: each a plausible or an arbitrary value; sometimes unknown keys."""
    keys = draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=6, unique=True))
    d = {}
    for k in keys:
        d[k] = draw(value if draw(chance(0.1)) else FIELD_VALUES[k])
    if extra_keys and draw(chance(0.05)):
        d[draw(st.one_of(weird_text, st.sampled_from(["hostnme", "include", "Memory", "wall-time"])))] = draw(value)
    return d


def policy_is_valid(p: object) -> bool:
    """A loaded Policy is what the loader promises: a Policy that validates again and survives a
    round trip through plain data."""
    from jailpy.policy import from_dict

    assert isinstance(p, Policy)
    p.validate()
    again = from_dict(msgspec.to_builtins(p), "round trip")
    return msgspec.to_builtins(again) == msgspec.to_builtins(p) and again.digest() == p.digest()


# ------------------------------------------------------------------ seccomp ----

SYSCALL_NAMES = ["read", "write", "ptrace", "clone", "socket", "ioctl", "personality", "unshare", "mount", "bpf",
                 "openat", "clone3", "statmount", "file_setattr", "uretprobe", "kill", "prctl", "execve"]
BAD_SYSCALL_NAMES = ["vm86", "socketcall", "nosuchcall", "", "READ", "read ", "syscall_400"]
ACTIONS = ["allow", "deny", "errno", "kill", "log"]
BAD_ACTIONS = ["trap", "ALLOW", "", "notify"]
ERRNOS = st.one_of(st.sampled_from(["EPERM", "ENOSYS", "EACCES", "EWHAT", "errno", "E2BIG", "EOK"]),
                   st.integers(-2, 5000), st.booleans())
SYMS = ["CLONE_NEWUSER", "AF_UNIX", "AF_INET", "TIOCSTI", "PER_LINUX", "PER_QUERY", "CLONE_NS_FLAGS", "0x10", "0",
        "1", "2", "7", "0xFFFFFFFF", "18446744073709551615"]
BAD_SYMS = ["NOPE", "18446744073709551616", "4294967296", "-1", "0x", ""]


@st.composite
def conditions(draw) -> str:
    """A ``when`` condition: from the grammar of jailpy.seccomp.parse_condition, or broken text."""
    if draw(chance(0.05)):
        return draw(weird_text)
    syms = st.sampled_from(BAD_SYMS) if draw(chance(0.05)) else st.sampled_from(SYMS)

    def clause(a: int) -> str:
        lhs = f"low32(arg{a})" if draw(st.booleans()) else f"arg{a}"
        kind = draw(st.integers(0, 2))
        val = " | ".join(draw(st.lists(syms, min_size=1, max_size=3)))
        if kind == 0:
            ops = ["=", "=>", "<>"] if draw(chance(0.05)) else ["==", "!=", "<", "<=", ">", ">="]
            return f"{lhs} {draw(st.sampled_from(ops))} {val}"
        if kind == 1:
            return f"{lhs} & {val} {draw(st.sampled_from(['==', '!=']))} {draw(syms)}"
        items = ", ".join(draw(st.lists(syms, min_size=0 if draw(chance(0.05)) else 1, max_size=4)))
        return f"{lhs} {draw(st.sampled_from(['in', 'not in', 'not  in']))} {{{items}}}"

    n = draw(st.integers(1, 3))
    args = draw(st.lists(st.integers(0, 7 if draw(chance(0.05)) else 5), min_size=n, max_size=n,
                         unique=not draw(chance(0.05))))
    return " and ".join(clause(a) for a in args)


@st.composite
def seccomp_rules(draw) -> dict:
    r: dict = {}
    if not draw(chance(0.03)):
        r["action"] = draw(st.sampled_from(BAD_ACTIONS) if draw(chance(0.05)) else st.sampled_from(ACTIONS))
    if r.get("action") in ("deny", "errno") and not draw(chance(0.2)) or draw(chance(0.05)):
        r["errno"] = draw(st.sampled_from(["EPERM", "ENOSYS", "EACCES", 1, 13]) if not draw(chance(0.2)) else ERRNOS)
    if draw(chance(0.05)):
        r["syscalls"] = draw(value)
    else:
        names = st.sampled_from(BAD_SYSCALL_NAMES) if draw(chance(0.05)) else st.sampled_from(SYSCALL_NAMES)
        r["syscalls"] = draw(st.lists(names, min_size=0 if draw(chance(0.03)) else 1, max_size=4))
    if draw(st.booleans()):
        r["when"] = draw(st.one_of(conditions(), st.lists(conditions(), max_size=3)))
    for k in ("group", "why"):
        if draw(chance(0.3)):
            r[k] = draw(value if draw(chance(0.1)) else weird_text)
    if draw(chance(0.03)):
        r[draw(weird_text)] = draw(value)
    return r


@st.composite
def seccomp_docs(draw) -> dict:
    """A seccomp TOML policy document (see policies/seccomp/default.toml for the format)."""
    d: dict = {}
    if not draw(chance(0.05)):
        d["known_max_nr"] = draw(st.one_of(big_int, value) if draw(chance(0.1)) else
                                 st.sampled_from([469, 335, 1000, 1]))
    if not draw(chance(0.05)):
        d["default_action"] = draw(value if draw(chance(0.05)) else st.sampled_from(ACTIONS + BAD_ACTIONS[:1]))
    if d.get("default_action") in ("deny", "errno") and not draw(chance(0.2)) or draw(chance(0.05)):
        d["default_errno"] = draw(st.sampled_from(["EPERM", "ENOSYS", 38]) if not draw(chance(0.2)) else ERRNOS)
    if draw(chance(0.3)):
        d["report"] = draw(value if draw(chance(0.1)) else st.booleans())
    if draw(chance(0.2)):
        d["include"] = draw(value if draw(chance(0.1)) else st.lists(st.sampled_from(
            ["default", "strict", "nope", "docker-like", "self.toml", "../x.toml", "sets/enosys.toml"]), max_size=2))
    if draw(chance(0.2)):
        d["description"] = draw(weird_text)
    d["rules"] = draw(value if draw(chance(0.05)) else st.lists(seccomp_rules(), max_size=5))
    if draw(chance(0.03)):
        d[draw(weird_text)] = draw(value)
    return d


OCI_ACTIONS = ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
               "SCMP_ACT_TRAP", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_NOTIFY"]
BAD_OCI_ACTIONS = ["SCMP_ACT_NOPE", "", "allow"]
OCI_OPS = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
           "SCMP_CMP_MASKED_EQ"]


def _maybe(draw, good: st.SearchStrategy, bad: st.SearchStrategy, p: float = 0.05):
    """Draw from ``good``, or (probability ``p``) from ``bad``."""
    return draw(_either(good, bad, p))


def _either(good: st.SearchStrategy, bad: st.SearchStrategy, p: float = 0.05) -> st.SearchStrategy:
    return chance(p).flatmap(lambda b: bad if b else good)


@st.composite
def oci_args(draw) -> dict:
    a = {"index": _maybe(draw, st.integers(0, 5), st.one_of(st.integers(-1, 7), json_value)),
         "op": _maybe(draw, st.sampled_from(OCI_OPS), st.one_of(st.just("SCMP_CMP_WHAT"), json_value))}
    for k in ("value", "valueTwo"):
        if not draw(chance(0.2)):
            a[k] = _maybe(draw, st.sampled_from([0, 1, 2, 0x7E020000, 0x10, 2 ** 64 - 1, 2 ** 32]),
                          st.one_of(big_int, json_value))
    if draw(chance(0.03)):
        a[draw(weird_text)] = draw(json_value)
    return a


@st.composite
def oci_entries(draw) -> dict:
    e: dict = {}
    names = _maybe(draw, st.lists(st.sampled_from(SYSCALL_NAMES), min_size=1, max_size=4),
                   st.one_of(st.lists(st.sampled_from(BAD_SYSCALL_NAMES), max_size=2), json_value))
    if draw(chance(0.1)):
        e["name"] = names[0] if isinstance(names, list) and names else names
    else:
        e["names"] = names
    if not draw(chance(0.03)):
        e["action"] = _maybe(draw, st.sampled_from(OCI_ACTIONS),
                             st.one_of(st.sampled_from(BAD_OCI_ACTIONS), json_value))
    if draw(chance(0.3)):
        e["errnoRet"] = _maybe(draw, st.sampled_from([1, 13, 38, 22]), st.one_of(st.integers(-1, 5000), json_value))
    if draw(chance(0.4)):
        e["args"] = _maybe(draw, st.lists(oci_args(), max_size=3), json_value)
    for k in ("includes", "excludes"):
        if draw(chance(0.15)):
            e[k] = _maybe(draw, st.fixed_dictionaries({}, optional={
                "caps": _either(st.lists(st.sampled_from(["CAP_SYS_ADMIN", "CAP_X"]), max_size=2), json_value),
                "arches": _either(st.lists(st.sampled_from(["amd64", "x86_64", "arm64", "s390x"]), max_size=2),
                                  json_value),
                "minKernel": _either(st.sampled_from(["5.8", "4.14", "99.0", "6.18"]),
                                     st.one_of(st.sampled_from(["x", "6", ""]), json_value))}), json_value)
    if draw(chance(0.2)):
        e["comment"] = _maybe(draw, weird_text, json_value)
    if draw(chance(0.03)):
        e[draw(weird_text)] = draw(json_value)
    return e


@st.composite
def oci_docs(draw) -> dict:
    """An OCI/Docker seccomp profile (runtime-spec config-linux.md#seccomp), sometimes broken."""
    d: dict = {}
    if not draw(chance(0.03)):
        d["defaultAction"] = _maybe(draw, st.sampled_from(OCI_ACTIONS),
                                    st.one_of(st.sampled_from(BAD_OCI_ACTIONS), json_value))
    if draw(chance(0.3)):
        d["defaultErrnoRet"] = _maybe(draw, st.sampled_from([1, 38]), st.one_of(st.integers(-1, 5000), json_value))
    if draw(chance(0.4)):
        d["architectures"] = _maybe(draw, st.lists(st.sampled_from(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86",
                                                                   "SCMP_ARCH_AARCH64"]), max_size=3), json_value)
    if draw(chance(0.15)):
        d["archMap"] = _maybe(draw, st.lists(st.fixed_dictionaries(
            {"architecture": _either(st.sampled_from(["SCMP_ARCH_X86_64", "SCMP_ARCH_ARM"]), json_value)},
            optional={"subArchitectures": _either(st.lists(st.sampled_from(["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
                                                           max_size=2), json_value)}), max_size=2), json_value)
    if draw(chance(0.15)):
        d["flags"] = _maybe(draw, st.lists(st.sampled_from(["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_TSYNC"]),
                                           max_size=2), json_value)
    if draw(chance(0.1)):
        d["listenerPath"] = draw(json_value)
    d["syscalls"] = _maybe(draw, st.lists(oci_entries(), max_size=5), json_value)
    if draw(chance(0.03)):
        d[draw(weird_text)] = draw(json_value)
    return d


@st.composite
def json_mutations(draw, doc: object) -> object:
    """``doc`` (parsed JSON) with a few random edits: a value replaced, a key removed or added,
    a list entry duplicated or dropped."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(1, 4))):
        # walk to a random container
        node = doc
        for _ in range(draw(st.integers(0, 4))):
            kids = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
            kids = [k for k in kids if isinstance(k, (dict, list)) and k]
            if not kids:
                break
            node = draw(st.sampled_from(kids))
        op = draw(st.integers(0, 3))
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            if op == 0:
                del node[key]
            elif op == 1:
                node[key] = draw(json_value)
            elif op == 2:
                node[draw(weird_text)] = draw(json_value)
            else:
                node[key] = [node[key]] if not isinstance(node[key], list) else node[key] * 2
        elif isinstance(node, list) and node:
            j = draw(st.integers(0, len(node) - 1))
            if op == 0:
                del node[j]
            elif op == 1:
                node[j] = draw(json_value)
            elif op == 2:
                node.append(draw(json_value))
            else:
                node.insert(j, node[j])
    return doc
