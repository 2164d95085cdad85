"""Outside review 15 (second round) through the API: the segment filter with one unknown end (M4) and a
CSV header with a column given twice (M5). Each failed before its fix."""

from __future__ import annotations

import csv
import io

from service.case_files import EXAMPLE_SERIES
from tests.unit.api.test_registry_api import _case_ids, _shared_api, api  # noqa: F401 (the fixtures)


def _series_row() -> dict[str, str]:
    rows = list(csv.DictReader(io.StringIO(EXAMPLE_SERIES.read_text(), newline="")))
    row = next(r for r in rows if r["case_id"] == "IVC-001")
    assert row["registry_consent"] == "yes"
    return row


def _csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def test_segment_filter_selects_a_known_end_beside_an_unknown_one(api):  # noqa: F811
    """``unknown``..``I`` certainly involves I, ``III``..``unknown`` certainly involves III (docs/registry.md,
    filter ``segment``: "with one end `unknown`, the known end alone")."""
    rows = []
    for case_id, low, high in (("R15-UI", "unknown", "I"), ("R15-IIIU", "III", "unknown")):
        row = {**_series_row(), "case_id": case_id, "patient_identifier_value": case_id}
        row["diagnosis_ivc_segment_from"], row["diagnosis_ivc_segment_to"] = low, high
        rows.append(row)
    imported = api.post_csv(_csv(rows))
    assert imported.status_code == 200, imported.get_json()
    assert "R15-UI" in _case_ids(api.get("/registry/cases.csv?segment=I"))
    assert "R15-IIIU" in _case_ids(api.get("/registry/cases.csv?segment=III"))
    assert not {"R15-UI", "R15-IIIU"} & set(_case_ids(api.get("/registry/cases.csv?segment=II")))
    with_unknown_end = api.get("/registry/summary?segment=III").get_json()
    assert with_unknown_end["segments"]["unknown"] == 1  # counted, as its span is unknown


def test_a_csv_header_with_a_column_twice_is_refused_naming_it(api):  # noqa: F811
    """``patient_sex`` twice (female, then male): refused as an unknown column is, not the last kept."""
    row = _series_row()
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[*row, "patient_sex"], [*row.values(), "male"]])
    resp = api.post_csv(out.getvalue().encode())
    assert resp.status_code in (400, 422), resp.get_json()
    [issue] = resp.get_json()["issue"]
    assert "patient_sex" in issue["diagnostics"] and "more than once" in issue["diagnostics"]
