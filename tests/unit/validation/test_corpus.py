"""Every corpus case whose verdict FHIR's rules decide: valid resources give no error, each mutation
an error on the element it broke. Expectations come from the mutation itself, never from a run."""

from __future__ import annotations

import pytest

from service.errors import Issue
from tests.contract.corpus import Case, corpus

DECIDED = [c for c in corpus() if c.errors is not None]
VALID = [c for c in DECIDED if not c.errors]
BROKEN = [c for c in DECIDED if c.errors]


def _errors(validator, case: Case) -> list[Issue]:
    issues = (
        validator.validate_bundle(case.resource)
        if case.kind == "bundle"
        else validator.validate(case.resource)
    )
    return [i for i in issues if i.severity in ("error", "fatal")]


def _at(issue: Issue, expression: str) -> bool:
    where = issue.expression or ""
    return where == expression or where.startswith((expression + ".", expression + "["))


def test_the_corpus_is_large_and_covers_every_mutation_class():
    cases = corpus()
    assert len(cases) >= 500
    classes = {c.mutation for c in cases}
    assert {
        "valid", "drop", "exceed", "type", "pattern", "binding", "ucum",
        "extension", "component", "reference", "invariant", "date",
    } <= classes  # fmt: skip


def test_case_names_are_stable_and_unique():
    names = [c.name for c in corpus()]
    assert len(set(names)) == len(names)
    assert "ivclms-001/Patient-0/valid" in names
    assert "ivclms-001/Patient-0/drop:identifier" in names


@pytest.mark.parametrize("case", VALID, ids=[c.name for c in VALID])
def test_no_error(validator, case):
    assert _errors(validator, case) == []


@pytest.mark.parametrize("case", BROKEN, ids=[c.name for c in BROKEN])
def test_error_on_the_broken_element(validator, case):
    errors = _errors(validator, case)
    assert errors, f"{case.name}: no error"
    assert any(_at(e, case.expression) for e in errors), (case.expression, errors)
