"""Logging set-up. Application logs never carry patient data: log ids and counts, never bodies.

Every log line is one line: the formatter escapes CR, LF, NUL and every other control character of a
message (``\\r``, ``\\n``, ``\\x00``, ...), so a value a client sent (a path with ``%0d%0a``, a header)
can never start a forged line of its own. Tracebacks, which the service writes itself, keep theirs.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

import orjson

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


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``IVCLMS_LOG_FORMAT=json``), for log shippers that parse fields
    instead of text. JSON escapes every control character itself, a traceback included, so a
    record is always exactly one line and no value can forge another."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


LOG_FORMATS = ("text", "json")


def formatter(log_format: str, fmt: str | None = FORMAT, datefmt: str | None = None) -> logging.Formatter:
    """The formatter of ``log_format`` (one of ``LOG_FORMATS``); ``fmt``/``datefmt`` shape the text one."""
    if log_format == "json":
        return JsonFormatter()
    return EscapingFormatter(fmt, datefmt)


def configure(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler])
