"""Text the CLI shows: paths and arguments that are not UTF-8, made printable and valid JSON.

Linux paths, arguments and environment values are bytes; Python hands them over as str, with
each byte that is not UTF-8 decoded to a lone surrogate (U+DC80-U+DCFF, PEP 383
surrogateescape).  Where the CLI shows such a string (messages, --report, ps --json, audit)
each of those bytes is written ``\\xNN``: the text stays valid UTF-8, and a JSON document stays
JSON every parser accepts.
"""

from __future__ import annotations

import sys

from .text import clean, fs_text, one_line  # noqa: F401 - the CLI's names for them

SUBAPP_SETTINGS = dict(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                       context_settings={"help_option_names": ["-h", "--help"]})
"""The typer settings of a sub-command group (``jailpy image``)."""


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
