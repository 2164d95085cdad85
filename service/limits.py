"""Cost limits: how much one request or one client may make the service do, checked before the work.

Each check runs before the work it bounds: the items of a case's arrays are counted on the parsed JSON
before the schema, rules and mapping see it (a case maps to about one resource per item: the
examples hold 35-62 items and map to 37-60 resources), and the mapped Bundle's entries before it is
validated and stored; a CSV import's data rows and a posted Bundle's entries
and patients are counted before any row or resource is validated; an ``$export`` is refused at
kick-off when its client already has too many jobs queued or running, or too many bytes of files
kept. Every refusal names the limit and the setting that raises it (``docs/security.md``).

Defaults fit a real case series with room to spare: the nine example cases map to 37-60 resources
each, and the largest published IVC-LMS series hold a few hundred cases (``docs/hardening.md``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from service.errors import TooLarge
from service.settings import PREFIX, Settings

RESOURCES_SETTING = f"{PREFIX}LIMITS_MAX_RESOURCES_PER_CASE"
CASES_SETTING = f"{PREFIX}LIMITS_MAX_CASES_PER_IMPORT"
EXPORTS_SETTING = f"{PREFIX}LIMITS_MAX_ACTIVE_EXPORTS"
EXPORT_BYTES_SETTING = f"{PREFIX}LIMITS_MAX_EXPORT_BYTES"


@dataclass(frozen=True)
class Limits:
    max_resources_per_case: int = 1000
    max_cases_per_import: int = 1000
    max_active_exports: int = 2
    max_export_bytes: int = 1024**3

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_resources_per_case=settings.limits_max_resources_per_case,
            max_cases_per_import=settings.limits_max_cases_per_import,
            max_active_exports=settings.limits_max_active_exports,
            max_export_bytes=settings.limits_max_export_bytes,
        )


def array_items(data: Any, stop_after: int) -> int:
    """Items of the arrays anywhere in ``data`` (objects and values alike), counted level by level
    without recursion; stops once past ``stop_after``."""
    count = 0
    level: list[Any] = [data]
    while level:
        below: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                below.extend(v for v in node.values() if isinstance(v, dict | list))
            elif isinstance(node, list):
                count += len(node)
                if count > stop_after:
                    return count
                below.extend(item for item in node if isinstance(item, dict | list))
        level = below
    return count


def check_case(data: Any, limits: Limits) -> None:
    """Before validation: a case whose arrays hold more items than a case may have resources."""
    most = limits.max_resources_per_case
    if array_items(data, most) > most:
        raise TooLarge(
            f"the case's arrays hold more than {most} items: a case may map to at most {most} resources "
            f"({RESOURCES_SETTING})"
        )


def check_resources(count: int, limits: Limits, where: str | None = None) -> None:
    """A case's mapped Bundle, or one patient's entries in a posted Bundle."""
    most = limits.max_resources_per_case
    if count > most:
        what = f"{where}: " if where else ""
        raise TooLarge(f"{what}{count} resources for one case; at most {most} ({RESOURCES_SETTING})", where)


def check_cases(count: int, limits: Limits, what: str) -> None:
    most = limits.max_cases_per_import
    if count > most:
        raise TooLarge(f"{what}: more than {most} cases in one request ({CASES_SETTING})")


def check_bundle_entries(count: int, limits: Limits) -> None:
    """Before anything else: no more entries than the most patients with the most resources each."""
    most = limits.max_resources_per_case * limits.max_cases_per_import
    if count > most:
        raise TooLarge(
            f"Bundle.entry: {count} entries; at most {most} ({RESOURCES_SETTING} x {CASES_SETTING})",
            "Bundle.entry",
        )


def csv_data_rows(text: str, stop_after: int) -> int:
    """Data rows of a CSV text (the header not counted), read without validating; stops past
    ``stop_after``. Text the csv module cannot read counts as far as it was read (the import then
    reports it)."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    rows = -1  # the header
    try:
        for row in reader:
            if not row:
                continue  # a blank line is no row (csv.DictReader skips it too)
            rows += 1
            if rows > stop_after:
                break
    except csv.Error:
        pass
    return max(rows, 0)


def check_csv_rows(text: str, limits: Limits) -> None:
    most = limits.max_cases_per_import
    if csv_data_rows(text, most) > most:
        raise TooLarge(f"the CSV holds more than {most} data rows; at most {most} cases ({CASES_SETTING})")


def check_operations(bundle: Any, limits: Limits) -> None:
    """GET and DELETE entries of a posted batch, counted before any is answered: each GET is a read
    answered in full, so their number is bounded like one case's resources (413 naming the setting)."""
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    if not isinstance(entries, list):
        return
    count = sum(
        1
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("request"), dict)
        and e["request"].get("method") in ("GET", "DELETE")
    )
    most = limits.max_resources_per_case
    if count > most:
        raise TooLarge(
            f"Bundle.entry: {count} GET/DELETE entries; at most {most} ({RESOURCES_SETTING})", "Bundle.entry"
        )
