"""Query parameters read the same way everywhere: bounded integers, instants with a zone."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import request

from service.errors import BadRequest, Issue


def int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    # ASCII digits only ("²".isdigit() is true) and no more of them than ``high`` has: int() of a
    # 5000-digit string raises ValueError (Python's int_max_str_digits), which would be a 500.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(high)) or not low <= int(raw) <= high:
        raise BadRequest([Issue("invalid", f"{name}: must be a whole number from {low} to {high}", name)])
    return int(raw)


def parse_instant(raw: str, name: str) -> datetime:
    """A client's instant (``2026-01-01T00:00:00Z``); a date without zone is ambiguous, so refused."""
    try:
        moment: datetime | None = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if moment is not None and moment.tzinfo is not None:
            # In UTC now: 0001-01-01T00:00:00+01:00 has no UTC instant (the database would overflow).
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        moment = None
    if moment is None or moment.tzinfo is None:
        message = f"{name}: must be an instant with a zone, like 2026-01-01T00:00:00Z"
        raise BadRequest([Issue("invalid", message, name)])
    return moment
