"""Text the CLI shows: paths and arguments that are not UTF-8, made printable and valid JSON.

Linux paths, arguments and environment values are bytes; Python hands them over as str, with
each byte that is not UTF-8 decoded to a lone surrogate (U+DC80-U+DCFF, PEP 383
surrogateescape).  Where the CLI shows such a string (messages, --report, ps --json, audit)
each of those bytes is written ``\\xNN``: the text stays valid UTF-8, and a JSON document stays
JSON every parser accepts.
"""

from __future__ import annotations

import sys


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


def escape_undecodable_output() -> None:
    """Make stdout and stderr write bytes that were not UTF-8 in a path or argument (str with
    surrogateescape) as ``\\xNN`` instead of raising UnicodeEncodeError (see :func:`fs_text`)."""
    import codecs

    def handler(e: UnicodeError) -> tuple[str, int]:
        if not isinstance(e, UnicodeEncodeError):
            raise e
        return "".join(f"\\x{o - 0xDC00:02x}" if 0xDC80 <= o <= 0xDCFF else f"\\u{o:04x}" if o <= 0xFFFF else
                       f"\\U{o:08x}" for o in map(ord, e.object[e.start:e.end])), e.end

    try:
        codecs.lookup_error("jailpy-escape")
    except LookupError:
        codecs.register_error("jailpy-escape", handler)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="jailpy-escape")
        except (AttributeError, ValueError, OSError):
            pass  # not a TextIOWrapper (a test's capture): nothing to change
