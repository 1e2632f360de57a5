"""Text jailpy shows or writes: strings that came from paths, arguments and the environment.

Linux paths, arguments and environment values are bytes; Python hands them over as str, with
each byte that is not UTF-8 decoded to a lone surrogate (U+DC80-U+DCFF, PEP 383
surrogateescape).  Where jailpy shows such a string (error messages, the Result's JSON,
``jailpy ps --json``, audit) each of those bytes is written ``\\xNN``: the text stays valid
UTF-8, and a JSON document stays JSON every parser accepts.
"""

from __future__ import annotations


def fs_text(s: str) -> str:
    """``s`` with the bytes that were not UTF-8 (decoded with surrogateescape, as Python decodes
    paths, argv and the environment) written as ``\\xNN``, and any other lone surrogate as
    ``\\uDXXX``: always valid UTF-8 text."""
    try:
        s.encode()
        return s
    except UnicodeEncodeError:
        pass
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else
                   f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)


def clean(obj):
    """``obj`` (JSON-able builtins) with every string passed through :func:`fs_text`."""
    if isinstance(obj, str):
        return fs_text(obj)
    if isinstance(obj, list):
        return [clean(v) for v in obj]
    if isinstance(obj, dict):
        return {clean(k): clean(v) for k, v in obj.items()}
    return obj


def one_line(msg: str) -> str:
    """``msg`` as one line of valid text: non-UTF-8 bytes as ``\\xNN``, control and format
    characters escaped as repr() does."""
    msg = fs_text(msg)
    if msg.isprintable():
        return msg
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)
