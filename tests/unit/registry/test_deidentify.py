"""De-identified extracts: every direct identifier, date and free text of the examples is gone."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from service.codes import tables
from service.registry import deidentify as deid
from service.registry import extract
from service.registry.extract import Options
from tests.unit.registry.conftest import EXAMPLE_FILES

KEY = b"test-pseudonym-key"
DEID = Options(deidentified=True, key=KEY)
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Free-text fields of the case JSON, listed here by hand (not from the code under test).
FREE_TEXT_KEYS = {
    "institution",
    "reference",
    "text",
    "biopsy_result",
    "findings",
    "detail",
    "frozen_section",
    "route",
    "frequency",
    "stop_reason_text",
    "not_given_reason",
    "death_cause",
    "decision",
}


def _identifying(data, key=None):
    """Every identifier, date and free-text value of an example as written in its file."""
    if isinstance(data, dict):
        for k, v in data.items():
            if k in ("case_id", "birth_date") or k in FREE_TEXT_KEYS:
                if v is not None:
                    yield v
            elif k == "identifier":
                yield v["value"]
            else:
                yield from _identifying(v, k)
    elif isinstance(data, list):
        for v in data:
            yield from _identifying(v, key)
    elif isinstance(data, str) and DATE.fullmatch(data):
        yield data


def _leaks(example, strings) -> set[str]:
    """Identifying values of ``example`` among ``strings``; a free text that is also a code
    (``leiomyosarcoma``) is no leak when it appears."""
    codes = {key for t in tables().values() for key in t.keys()}  # noqa: SIM118 (Table is not a dict)
    return {v for v in _identifying(example) if v not in codes} & set(strings)


def _strings(data):
    if isinstance(data, dict):
        for v in data.values():
            yield from _strings(v)
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v)
    elif isinstance(data, str):
        yield data


@pytest.fixture
def written():
    return [json.loads(p.read_text(encoding="utf-8")) for p in EXAMPLE_FILES]


def test_the_check_is_meaningful_identified_extracts_do_contain_the_values(cases, written):
    text = "".join(extract.csv_lines(cases, Options()))
    for example in written:
        for value in _identifying(example):
            assert value in text


def test_deidentified_csv_has_no_identifier_date_or_free_text(cases, written):
    text = "".join(extract.csv_lines(cases, DEID))
    assert not DATE.search(text)
    cells = {cell for row in csv.reader(io.StringIO(text)) for cell in row}
    for example in written:
        assert not _leaks(example, cells), example["case_id"]
        assert example["patient"]["identifier"]["value"] not in text
        assert example["case_id"] not in text
    header = next(csv.reader(io.StringIO(text)))
    assert not [c for c in header if "birth_date" in c or "identifier" in c or c == "diagnosis_date"]
    assert not [c for c in header if c.endswith("_date")]
    assert "surgery1_date_days" in header and "outcome_last_contact_days" in header


def test_deidentified_ndjson_has_no_identifier_date_or_free_text(cases, written):
    text = "".join(extract.ndjson_lines(cases, DEID))
    assert not DATE.search(text)
    records = [json.loads(line) for line in text.splitlines()]
    for record, example in zip(records, written, strict=True):
        assert not _leaks(example, _strings(record)), example["case_id"]
        assert "identifier" not in record["patient"] and "birth_date" not in record["patient"]
        assert "date" not in record["diagnosis"]
        assert not FREE_TEXT_KEYS & set(_keys(record))


def _keys(data):
    if isinstance(data, dict):
        for k, v in data.items():
            yield k
            yield from _keys(v)
    elif isinstance(data, list):
        for v in data:
            yield from _keys(v)


def test_dates_become_days_from_diagnosis(case):
    # 001: diagnosis 2021-02-20; presentation 2021-01-18 (-31 - 2 = -33), surgery 2021-04-12 (+51),
    # last contact 2024-04-20 (+1155), complication 2021-04-15 (+54).
    record = json.loads(next(extract.ndjson_lines([case("ivclms-001")], DEID)))
    assert record["presentation"]["date_days"] == -33
    assert record["surgery"][0]["date_days"] == 51
    assert record["outcome"]["last_contact_days"] == 1155
    assert record["postoperative"]["complications"][0]["date_days"] == 54
    assert record["outcome"]["death_date_days"] is None
    row = next(csv.DictReader(io.StringIO("".join(extract.csv_lines([case("ivclms-001")], DEID)))))
    assert (row["surgery1_date_days"], row["outcome_last_contact_days"]) == ("51", "1155")
    # Structured text stays: lab units and care-plan links.
    assert record["diagnosis"]["labs"][0]["unit"] == "mL/min/{1.73_m2}"
    assert record["care_plan"]["activities"][0]["performed"] == "therapies[0]"
    # Derived values are intervals already: the same as in the identified extract.
    assert record["derived"] == json.loads(json.dumps(extract.derived_values(case("ivclms-001"))))


def test_the_pseudonym_is_stable_keyed_and_not_the_case_id(case):
    c = case("ivclms-001")
    first = deid.deidentify(c, KEY)["case_id"]
    assert first == deid.deidentify(case("ivclms-001"), KEY)["case_id"]
    assert first != deid.deidentify(c, b"another-key")["case_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and c["case_id"] not in first
    other = case("ivclms-002")
    assert deid.deidentify(other, KEY)["case_id"] != first


def test_ages_over_89_are_grouped(case):
    old = case("ivclms-005")  # age only, no birth date
    old["patient"]["age_at_diagnosis"] = 93
    record = json.loads(next(extract.ndjson_lines([old], DEID)))
    assert record["patient"]["age_at_diagnosis"] == "90+"
    assert record["derived"]["age_at_diagnosis_years"] == "90+"
    row = next(csv.DictReader(io.StringIO("".join(extract.csv_lines([old], DEID)))))
    assert row["patient_age_at_diagnosis"] == row["derived_age_at_diagnosis_years"] == "90+"
    old["patient"]["age_at_diagnosis"] = 89
    assert deid.deidentify(old, KEY)["patient"]["age_at_diagnosis"] == 89


def test_free_text_list_comes_from_the_schema_and_matches_the_hand_list():
    leaves = {path.rsplit(".", 1)[-1] for path in deid.free_text_paths()}
    assert leaves == FREE_TEXT_KEYS | {"value"}  # patient.identifier.value is text too


def test_the_input_case_is_not_changed(case):
    c = case("ivclms-003")
    before = json.dumps(c, sort_keys=True)
    deid.deidentify(c, KEY)
    list(extract.csv_lines([c], DEID))
    assert json.dumps(c, sort_keys=True) == before


def test_finding_12_keys_are_per_recipient_and_stable():
    master = b"m" * 32
    x, y = deid.recipient_key(master, "registry-x"), deid.recipient_key(master, "registry-y")
    assert x == deid.recipient_key(master, "registry-x") and x != y and len(x) == 32
    assert x != deid.recipient_key(b"n" * 32, "registry-x")
    with pytest.raises(ValueError):
        deid.recipient_key(master, "")


def test_finding_12_source_system_is_an_opaque_token_per_recipient(case):
    c = case("ivclms-001")
    x, y = deid.deidentify(c, KEY), deid.deidentify(c, b"another-key")
    assert re.fullmatch(r"src-[0-9a-f]{16}", x["source_system"])
    assert x["source_system"] != y["source_system"]
    assert x["source_system"] == deid.deidentify(case("ivclms-004"), KEY)["source_system"]  # also hospital A
    assert x["source_system"] != deid.deidentify(case("ivclms-002"), KEY)["source_system"]
    row = next(csv.DictReader(io.StringIO("".join(extract.csv_lines([c], DEID)))))
    assert row["source_system"] == x["source_system"]


def test_finding_12_the_diagnosis_date_is_kept_as_its_year_only(case):
    record = json.loads(next(extract.ndjson_lines([case("ivclms-001")], DEID)))
    assert record["diagnosis"]["year"] == 2021 and "date" not in record["diagnosis"]
    header = next(csv.reader(io.StringIO("".join(extract.csv_lines([case("ivclms-001")], DEID)))))
    assert "diagnosis_year" in header and "diagnosis_date" not in header


def test_finding_12_cursors_verify_only_for_the_key_that_signed_them():
    signed = deid.cursor("2026-01-01T00:00:00.000Z", KEY)
    assert deid.cursor_instant(signed, KEY) == "2026-01-01T00:00:00.000Z"
    assert deid.cursor_instant(signed, b"another-key") is None
    assert deid.cursor_instant(signed.replace("2026", "2025", 1), KEY) is None
    assert deid.cursor_instant("2026-01-01T00:00:00.000Z", KEY) is None
    assert deid.cursor_instant("~", KEY) is None
