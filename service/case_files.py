"""Case and Bundle files for the command line (and, later, bulk import into storage).

Pure functions, text in and data or problems out: the caller reads and writes files, so the same
``import_rows`` can feed files today and the database later. Only the example-series generator at the
end touches the disk.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from service.errors import Issue, Unprocessable
from service.limits import Limits, check_csv_rows
from service.mapping.forward import case_to_bundle
from service.mapping.reverse import bundle_to_case
from service.mapping.spec import MappingError
from service.model import validate_case
from service.model.csv_flat import read_csv, sheet_message, write_csv

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
EXAMPLE_SERIES = EXAMPLES_DIR / "ivclms-case-series.csv"
BUNDLE_SUFFIX = ".bundle.json"
# A FHIR instant: seconds required, fraction optional, a zone required (Provenance.recorded).
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


class CaseFileError(ValueError):
    """Input that is not what a command reads (bad JSON, not a Bundle); the message is one line."""


def load_json(text: str, name: str) -> Any:
    """Parsed JSON; a syntax error becomes a CaseFileError naming the file and the position."""
    try:
        return json.loads(text.removeprefix("\ufeff"))
    except json.JSONDecodeError as error:
        raise CaseFileError(
            f"{name}: not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None


def dump_json(data: Any) -> str:
    """JSON as the commands print and write it: 2-space indent, keys in insertion order."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def check_instant(value: str) -> str:
    """``value`` if it is a FHIR instant (it becomes Provenance.recorded); else ValueError."""
    if not _INSTANT.match(value):
        raise ValueError(f"{value!r} is not an instant like 2026-01-01T00:00:00Z (seconds and zone required)")
    return value


def map_case(data: Any, *, now: str) -> dict[str, Any]:
    """The transaction Bundle of a case as read from JSON; raises Unprocessable or MappingError."""
    return case_to_bundle(validate_case(data), now=now)


def unmap_bundle(
    data: Any, adjust: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The canonical case of a Bundle made by ``map_case``; raises CaseFileError, MappingError or
    Unprocessable, never a bare KeyError/TypeError for a hand-edited Bundle of the wrong shape."""
    if not isinstance(data, dict):
        raise CaseFileError("not a FHIR Bundle (not a JSON object)")
    if data.get("resourceType") != "Bundle":
        raise CaseFileError(f"not a FHIR Bundle (resourceType: {data.get('resourceType')!r})")
    entries = data.get("entry", [])
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("resource", {}), dict) for e in entries
    ):
        raise CaseFileError("Bundle.entry must be a list of objects, each with a resource object")
    try:
        return bundle_to_case(data, adjust)
    except (AttributeError, KeyError, TypeError, IndexError) as error:
        # reverse.py reads the shape case_to_bundle writes and does not check it element by element.
        raise MappingError(f"an element of the Bundle has an unexpected shape ({error!r})") from error


def bundle_file_name(case_id: str) -> str:
    """``<case_id>.bundle.json`` with every character outside ``A-Za-z0-9_.-~`` percent-encoded, so a
    case id can neither leave the output directory nor collide with another case id."""
    return quote(case_id, safe="") + BUNDLE_SUFFIX


# ---- CSV case series ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RowResult:
    """One data row of a case series: its Bundle, or the issues that rejected it (never both)."""

    number: int
    case_id: str | None = None
    bundle: dict[str, Any] | None = None
    case: dict[str, Any] | None = None
    issues: tuple[Issue, ...] = ()
    line: int = 0
    """The file line the row starts on (the header is line 1), as the messages and a spreadsheet say."""

    @property
    def ok(self) -> bool:
        return self.bundle is not None


@dataclass(frozen=True)
class ImportReport:
    rows: tuple[RowResult, ...]

    @property
    def imported(self) -> list[RowResult]:
        return [r for r in self.rows if r.ok]

    @property
    def rejected(self) -> list[RowResult]:
        return [r for r in self.rows if not r.ok]

    def summary(self) -> str:
        return f"{len(self.imported)} cases imported, {len(self.rejected)} rows rejected"


def import_rows(
    text: str, now: str, limits: Limits | None = None, on_row: Callable[[int], None] | None = None
) -> ImportReport:
    """Validate and map every data row of a CSV case series (row 1 = the first row after the header).

    A row either yields its Bundle or only issues (``line N: column: rule``, N the file line the row
    starts on, the header being line 1); one bad row never stops the others (callers decide whether
    the file is taken all or nothing). ``on_row(n)`` is told as row n is read (progress).
    A second row with the case_id of an already imported row is rejected, as it would replace the
    first. An unknown header column rejects the whole file (Unprocessable). With ``limits``, a file
    of more data rows than a request may import is refused (TooLarge) before any row is validated.
    """
    if limits is not None:
        check_csv_rows(text, limits)
    results: list[RowResult] = []
    seen: dict[str, int] = {}
    for number, (line, parsed) in enumerate(read_csv(text, on_row), start=1):
        if isinstance(parsed, Unprocessable):
            results.append(RowResult(number, issues=tuple(parsed.issues), line=line))
            continue
        case_id = str(parsed["case_id"])
        if case_id in seen:
            message = f"line {line}: case_id: {case_id} is already the case of line {seen[case_id]}"
            issue = Issue("duplicate", message, "case_id")
            results.append(RowResult(number, case_id, issues=(issue,), line=line))
            continue
        try:
            bundle = case_to_bundle(parsed, now=now)
        except MappingError as error:
            issue = Issue("processing", f"line {line}: {sheet_message(str(error))}")
            results.append(RowResult(number, case_id, issues=(issue,), line=line))
            continue
        seen[case_id] = line
        results.append(RowResult(number, case_id, bundle=bundle, case=parsed, line=line))
    return ImportReport(tuple(results))


def series_csv(cases: Iterable[Mapping[str, Any]]) -> str:
    """The CSV case series of cases as read from JSON (validated first, so the CSV is canonical)."""
    return write_csv(validate_case(case) for case in cases)


def example_series_csv(examples_dir: Path = EXAMPLES_DIR) -> str:
    """What ``examples/ivclms-case-series.csv`` must hold: every JSON example, in file name order."""
    paths = sorted(examples_dir.glob("ivclms-*.json"))
    return series_csv(json.loads(p.read_text(encoding="utf-8")) for p in paths)


def main(argv: list[str] | None = None) -> int:
    """``python -m service.case_files --write-example-csv``: regenerate the example case series."""
    parser = argparse.ArgumentParser(prog="python -m service.case_files", description=main.__doc__)
    parser.add_argument("--write-example-csv", action="store_true", help=f"write {EXAMPLE_SERIES.name}")
    args = parser.parse_args(argv)
    if not args.write_example_csv:
        parser.print_usage()
        return 2
    EXAMPLE_SERIES.write_text(example_series_csv(), encoding="utf-8", newline="")
    print(f"wrote {EXAMPLE_SERIES}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
