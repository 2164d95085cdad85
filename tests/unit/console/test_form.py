"""The case form generated from the case JSON Schema (service.console.form): every element of the
schema has its field, a stored case survives the edit form unchanged, empty means not recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.case_files import EXAMPLE_SERIES, EXAMPLES_DIR, import_rows
from service.codes import table
from service.console import form
from service.errors import BadRequest
from service.model.validate import validate_case

REPO = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((REPO / "docs" / "case.schema.json").read_text(encoding="utf-8"))
"""The published schema (test_generated_docs keeps it equal to the model), read here on its own."""
EXAMPLE_FILES = sorted((REPO / "examples").glob("*.json")) + sorted(
    (REPO / "examples" / "literature").glob("*.json")
)


# ---- an independent walk of the published schema ---------------------------------------------------


def _options(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a node, written out from the JSON Schema rules directly."""
    if "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].split("/")[-1]]
    if "anyOf" in node:
        return [o for sub in node["anyOf"] for o in _options(sub)]
    kind = node.get("type")
    if kind == "null":
        return []
    if isinstance(kind, list):
        node = {**node, "type": next(k for k in kind if k != "null")}
    return [node]


def _leaves(node: dict[str, Any], path: str, out: dict[str, list[dict[str, Any]]], arrays: set[str]) -> None:
    for option in _options(node):
        kind = option.get("type")
        if kind == "object":
            for key, sub in option["properties"].items():
                _leaves(sub, f"{path}.{key}" if path else key, out, arrays)
        elif kind == "array":
            items = _options(option["items"])
            if len(items) == 1 and "enum" in items[0]:
                out.setdefault(path, []).append(option)
            else:
                arrays.add(path)
                for item in items:
                    _leaves(item, f"{path}.0", out, arrays)
        else:
            out.setdefault(path, []).append(option)


def _schema_leaves() -> tuple[dict[str, list[dict[str, Any]]], set[str]]:
    out: dict[str, list[dict[str, Any]]] = {}
    arrays: set[str] = set()
    _leaves(SCHEMA, "", out, arrays)
    return out, arrays


def _fields(flat: dict[str, Any]) -> dict[str, form.Field]:
    return {f.name: f for f in form.build(flat).fields()}


def test_every_leaf_of_the_schema_has_exactly_one_field():
    leaves, arrays = _schema_leaves()
    # one item in every list, so that the items' fields are shown
    shown = _fields({f"{path}.0": "" for path in arrays})
    assert len(leaves) > 150  # the walk found the model, not an empty schema
    assert set(shown) == set(leaves)
    assert len(form.build({f"{path}.0": "" for path in arrays}).fields()) == len(leaves)  # no duplicates


def test_inputs_follow_the_schema_types():
    leaves, arrays = _schema_leaves()
    shown = _fields({f"{path}.0": "" for path in arrays})
    for name, options in leaves.items():
        got = shown[name]
        kinds = {o.get("type") for o in options}
        if kinds == {"array"}:
            assert got.kind == "checkboxes", name
        elif kinds == {"boolean"}:
            assert (got.kind, got.options) == ("select", [("yes", "Yes"), ("no", "No")]), name
        elif all("enum" in o or "const" in o for o in options):
            every = [str(v) for o in options for v in o.get("enum", [o.get("const")]) if v is not None]
            values = list(dict.fromkeys(every))  # a unit of several object forms is one select
            assert got.kind == "select" and [v for v, _ in got.options] == values, name
        elif kinds & {"number", "integer"}:
            assert got.kind == "number" and "number" in got.hint, name
        else:
            assert got.kind == "text", name


def test_labels_and_choices_come_from_the_model():
    shown = _fields({"surgery.0": ""})
    sex = shown["patient.sex"]
    assert sex.label == "Administrative sex" and sex.required
    assert sex.options == [(k, v.display) for k, v in table("sex").values.items()]
    date = shown["surgery.0.date"]
    assert date.kind == "text" and "YYYY-MM" in date.hint and "unknown" in date.hint
    grade = shown["pathology.fnclcc_grade"]
    assert [v for v, _ in grade.options] == ["1", "2", "3", "unknown", "not_applicable"]
    assert grade.options[0][1] == "FNCLCC grade 1"
    loss = next(g for g in _groups(form.build({"surgery.0": ""})) if g.name == "surgery.0.blood_loss_ml")
    assert loss.legend == "Estimated blood loss [mL]"  # a value, a bound, a range or another unit
    assert [f.name for f in loss.fields()] == [
        "surgery.0.blood_loss_ml",
        "surgery.0.blood_loss_ml.value",
        "surgery.0.blood_loss_ml.unit",
        "surgery.0.blood_loss_ml.comparator",
        "surgery.0.blood_loss_ml.low",
        "surgery.0.blood_loss_ml.high",
    ]
    assert shown["surgery.0.blood_loss_ml"].label == "Value [mL]"
    assert shown["surgery.0.blood_loss_ml.unit"].options == [("mL", "mL"), ("L", "L")]
    assert shown["patient.age_at_diagnosis"].hint.endswith("A whole number from 0 up to 130.")


def _groups(group: form.Group) -> list[form.Group]:
    out = [group]
    for child in [*group.children, *(group.items or [])]:
        if isinstance(child, form.Group):
            out += _groups(child)
    return out


def _stored_cases() -> list[tuple[str, dict[str, Any]]]:
    cases = [(p.name, validate_case(json.loads(p.read_text(encoding="utf-8")))) for p in EXAMPLE_FILES]
    for series in (EXAMPLE_SERIES, EXAMPLES_DIR / "ivclms-literature-series.csv"):
        report = import_rows(series.read_text(encoding="utf-8"), "2026-01-01T00:00:00Z")
        assert not report.rejected
        cases += [(f"{series.name}:{row.number}", row.case) for row in report.imported if row.case]
    return cases


@pytest.mark.parametrize(("name", "stored"), _stored_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_stored_case_round_trips_through_the_edit_form(name, stored):
    shown = form.build(form.flatten(stored)).fields()
    posted = {f.name: f.value for f in shown}  # what the browser posts: every input, empty or not
    parsed = form.parse(posted)
    assert parsed.errors == {}
    again = validate_case(parsed.case)
    # byte for byte as the content hash sees it (6.0 is not 6 there: the same content stores nothing)
    assert json.dumps(again, sort_keys=True) == json.dumps(stored, sort_keys=True)
    assert None not in _values(parsed.case)  # nothing recorded as null: empty is left out


def _values(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [v for sub in node.values() for v in _values(sub)] + list(node.values())
    if isinstance(node, list):
        return [v for sub in node for v in _values(sub)]
    return []


def test_empty_means_not_recorded_never_zero_false_or_blank():
    posted = {
        "case_id": "C-1",
        "institution": "   ",
        "patient.age_at_diagnosis": "",
        "diagnosis.hepatic_vein_involvement": "",
        "diagnosis.right_atrium_extension": "no",
        "surgery.0.transfusion_units": "0",
        "surgery.0.intent": "",
        "surgery.1.date": "",
        "surgery.1.transfusion_units": "",
    }
    case = form.parse(posted).case
    assert case == {
        "case_id": "C-1",
        "diagnosis": {"right_atrium_extension": False},
        "surgery": [{"transfusion_units": 0}],
    }


def test_typed_values_are_coerced_and_wrong_ones_reported_at_their_field():
    parsed = form.parse(
        {
            "patient.age_at_diagnosis": "54",
            "pathology.fnclcc_grade": "2",
            "pathology.histologic_subtype": ["spindle_cell", "myxoid"],
            "surgery.0.blood_loss_ml.comparator": ">",
            "surgery.0.blood_loss_ml.value": "1500",
            "surgery.0.operative_time_min": "7.5",
            "diagnosis.date": "unknown",
            "outcome.last_contact": "2021-03",
            "surgery.0.transfusion_units": "two",
            "diagnosis.luminal_occlusion_percent": "80",
            "diagnosis.luminal_occlusion_percent.low": "70",
            "postoperative.icu_stay_days.value": "3",
        }
    )
    assert parsed.case["patient"] == {"age_at_diagnosis": 54}
    assert parsed.case["pathology"] == {"fnclcc_grade": 2, "histologic_subtype": ["spindle_cell", "myxoid"]}
    assert parsed.case["surgery"] == [
        {"blood_loss_ml": {"comparator": ">", "value": 1500}, "operative_time_min": 7.5}
    ]
    assert parsed.case["diagnosis"] == {"date": "unknown"}
    assert parsed.case["outcome"] == {"last_contact": "2021-03"}
    assert set(parsed.errors) == {
        "surgery.0.transfusion_units",  # not a whole number
        "diagnosis.luminal_occlusion_percent",  # a plain value and a range at once
        "postoperative.icu_stay_days",  # a value without its unit
    }
    assert "whole number" in parsed.errors["surgery.0.transfusion_units"]
    huge = form.parse({"surgery.0.transfusion_units": "9" * 5000, "patient.smoking.pack_years": "9" * 5000})
    assert set(huge.errors) == {"surgery.0.transfusion_units", "patient.smoking.pack_years"}


@pytest.mark.parametrize(
    "posted",
    [
        {"nonsense": "x"},
        {"patient.nonsense": "x"},
        {"surgery.x.date": "2020"},
        {"surgery.0": "x"},  # an item is a fieldset, not an input
        {"patient": "x"},
        {"surgery.5000.date": "2020"},  # beyond the item bound
        {"case_id.more": "x"},
        {"surgery.01.date": "2020"},  # item 1 written twice would be read once
        {"surgery.\u0661.date": "2020"},  # a digit, but not an ASCII one
    ],
)
def test_a_field_the_schema_does_not_have_is_refused(posted):
    with pytest.raises(BadRequest) as refused:
        form.parse({"case_id": "C-1", **posted})
    assert refused.value.status == 400


def test_issue_paths_map_onto_field_names():
    assert form.field_of("surgery[0].date", {}) == "surgery.0.date"
    assert form.field_of("/surgery/0/date", {}) == "surgery.0.date"
    assert form.field_of("patient.birth_date", {}) == "patient.birth_date"
    assert form.field_of("case", {}) == ""
    assert form.field_of(None, {}) == ""
    assert form.field_of("surgery[0]", {}) == "surgery.0"  # a rule on the item: its fieldset
    assert form.field_of("surgery[0].nonsense", {}) == "surgery.0"
    # an empty item was left out, so the case's surgery[0] is the form's second
    parsed = form.parse(
        {"surgery.0.date": "", "surgery.1.date": "2020", "surgery.1.organs_resected.0.organ": ""}
    )
    assert parsed.case["surgery"] == [{"date": "2020"}]
    assert form.field_of("surgery[0].date", parsed.renames) == "surgery.1.date"


def test_add_and_remove_items_without_script():
    flat: dict[str, Any] = {"surgery.0.date": "2019", "surgery.1.date": "2020", "surgery.2.date": "2021"}
    removed = form.remove_item(flat, "surgery.1")
    assert removed == {"surgery.0.date": "2019", "surgery.1.date": "2021"}
    added = form.add_item(removed, "surgery")
    assert [
        g.name
        for g in form.build(added).fields()
        if g.name.endswith(".date") and g.name.startswith("surgery")
    ] == [
        "surgery.0.date",
        "surgery.1.date",
        "surgery.2.date",
    ]
    nested = form.add_item({}, "surgery.0.renal_veins")
    assert "surgery.0.renal_veins.0.side" in _fields(nested)
    for bad in ("patient.sex", "pathology.histologic_subtype", "nonsense"):
        with pytest.raises(BadRequest):
            form.add_item({}, bad)
    with pytest.raises(BadRequest):
        form.remove_item({}, "patient")


def test_the_summary_names_a_field_by_its_label_and_list_item():
    names = form.labels(form.build({"surgery.1.renal_veins.0.side": ""}))
    assert names["outcome.last_contact"] == "Date of last contact"
    assert names["surgery.1.date"] == "Operations 2, Date of the operation"
    assert names["surgery.1.renal_veins.0.side"] == "Operations 2, Renal vein management, per side 1, Side"
    assert names["surgery.0.blood_loss_ml"] == "Operations 1, Estimated blood loss [mL]"  # not "Value"
    assert names["surgery.0.blood_loss_ml.unit"] == "Operations 1, Estimated blood loss [mL], Unit"


def test_every_property_of_the_published_schema_has_a_short_title():
    titles = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                if "description" in sub:  # a model field (the inner forms of a choice have none)
                    titles.append((f"{where}.{key}", sub.get("title", "")))
            for key, sub in node.items():
                walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for sub in node:
                walk(sub, where)

    walk(SCHEMA, "")
    assert len(titles) > 150
    for where, title in titles:
        assert title and len(title) <= 60, where
        assert not title.endswith((".", ",", ";", ":")) and "`" not in title and "(" not in title, where
