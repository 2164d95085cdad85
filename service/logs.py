"""Logging set-up. Application logs never carry patient data: log ids and counts, never bodies.

Every log line is one line: the formatter escapes CR, LF, NUL and every other control character of a
message (``\\r``, ``\\n``, ``\\x00``, ...), so a value a client sent (a path with ``%0d%0a``, a header)
can never start a forged line of its own. Tracebacks, which the service writes itself, keep theirs.
"""

from __future__ import annotations

import logging
import re

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
"""C0 and C1 controls, DEL, and the Unicode line and paragraph separators."""


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value: object) -> str:
    """``value`` as text with no control character left (each one written as its escape), and the
    backslash doubled so that an escape in the output cannot be forged either."""
    return _CONTROL.sub(_escaped, str(value).replace("\\", "\\\\"))


class EscapingFormatter(logging.Formatter):
    """A Formatter whose message part is ``escape``d; the exception text it appends is left alone."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)


def configure(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
