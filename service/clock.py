"""Time, one way: the service's clock and the FHIR ``instant`` form every layer writes."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The default clock of intake, sync and pull (tests pass their own)."""
    return datetime.now(UTC)


def instant(moment: datetime) -> str:
    """FHIR ``instant`` in UTC with milliseconds (``2026-01-01T00:00:00.000Z``), as HAPI writes it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
