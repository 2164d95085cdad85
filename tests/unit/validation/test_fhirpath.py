"""Invariants through fhirpathpy: results, hasValue(), and the memo never mixing up elements."""

from __future__ import annotations

from service.validation.fhirpath import Invariants

PER_1 = "start.hasValue().not() or end.hasValue().not() or (start <= end)"
EXT_1 = "extension.exists() != value.exists()"
OBS_6 = "dataAbsentReason.empty() or value.empty()"


def test_period_invariant_with_has_value():
    inv = Invariants()
    assert inv.holds(PER_1, {"start": "2021-01-02", "end": "2021-01-01"}, "Period", {}) is False
    assert inv.holds(PER_1, {"start": "2021-01-01", "end": "2021-01-02"}, "Period", {}) is True
    assert inv.holds(PER_1, {"start": "2021-01-02"}, "Period", {}) is True
    assert inv.unsupported == {}


def test_memo_separates_elements_that_differ_in_a_named_property():
    inv = Invariants()
    both = {"url": "u", "valueString": "x", "extension": [{"url": "v", "valueString": "y"}]}
    value = {"url": "u", "valueString": "x"}
    assert inv.holds(EXT_1, value, "Extension", {}) is True
    assert inv.holds(EXT_1, both, "Extension", {}) is False
    assert inv.holds(EXT_1, value, "Extension", {}) is True


def test_memo_uses_choice_stems_and_the_resource_root():
    inv = Invariants()
    ok = {"resourceType": "Observation", "valueQuantity": {"value": 1}, "status": "final"}
    bad = {**ok, "dataAbsentReason": {"text": "x"}}
    assert inv.holds(OBS_6, ok, "Observation", ok) is True
    assert inv.holds(OBS_6, bad, "Observation", bad) is False
    assert inv.holds(OBS_6, {**ok, "status": "amended"}, "Observation", ok) is True


def test_an_expression_fhirpathpy_cannot_run_is_recorded_not_failed():
    inv = Invariants()
    assert inv.holds("noSuchFunction()", {"a": 1}, "Element", {}) is None
    assert "noSuchFunction()" in inv.unsupported
