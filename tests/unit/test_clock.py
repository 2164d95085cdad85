"""The FHIR instant form every layer writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from service.clock import instant, utcnow


def test_an_instant_is_utc_with_milliseconds_and_z() -> None:
    paris = timezone(timedelta(hours=1))
    assert instant(datetime(2026, 1, 1, 1, 0, 0, 123456, tzinfo=paris)) == "2026-01-01T00:00:00.123Z"
    assert instant(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000Z"


def test_the_clock_is_aware_utc() -> None:
    assert utcnow().utcoffset() == timedelta(0)
