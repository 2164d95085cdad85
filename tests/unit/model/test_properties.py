"""Properties over generated valid cases: they validate to themselves and round-trip through CSV."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings

from service.model import validate_case
from service.model.csv_flat import flatten, read_csv, unflatten, write_csv
from tests.strategies import valid_cases

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(valid_cases())
def test_generated_cases_are_canonical(case):
    assert validate_case(case) == case


@SETTINGS
@given(valid_cases())
def test_generated_cases_survive_json(case):
    assert validate_case(json.loads(json.dumps(case))) == case


@SETTINGS
@given(valid_cases())
def test_generated_cases_round_trip_through_a_csv_row(case):
    assert validate_case(unflatten(flatten(case))) == case


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_cases(), valid_cases())
def test_generated_cases_round_trip_through_a_csv_file(first, second):
    assert [c for _, c in read_csv(write_csv([first, second]))] == [first, second]
