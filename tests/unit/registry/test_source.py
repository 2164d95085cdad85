"""Reading cases for a registry pull: current active versions only, filters, keyset pages."""

from __future__ import annotations

import datetime as dt

import pytest

from service.db import make_engine
from service.intake import Intake
from service.registry import source
from service.registry.source import Filters
from service.store import migrate

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def stored(settings, cases):
    """The nine examples stored one minute apart (case n at T0 + n minutes); 003 is then changed."""
    engine = make_engine(settings)
    migrate.upgrade(engine)
    clock = {"now": T0}
    intake = Intake(engine, enqueue=False, clock=lambda: clock["now"])
    refs = {}
    for n, case in enumerate(cases):
        clock["now"] = T0 + dt.timedelta(minutes=n)
        refs[case["case_id"]] = intake.submit(intake.prepare(case), "test").case.id
    yield engine, intake, clock, refs
    engine.dispose()


NONE = Filters()


def _ids(engine, filters=NONE, page_size=source.PAGE_SIZE):
    return sorted(
        found.case["case_id"] for found in source.stream_cases(engine, filters, page_size=page_size)
    )


ALL = [f"IVC-00{n}" for n in range(1, 10)]


def test_every_active_case_once_whatever_the_page_size(stored):
    engine = stored[0]
    for size in (1, 2, 4, 9, 500):
        assert _ids(engine, page_size=size) == ALL
    refs = [found.ref for found in source.stream_cases(engine, Filters(), page_size=2)]
    assert refs == sorted(refs)


def test_the_current_version_is_read_and_withdrawn_cases_are_not(stored, case):
    engine, intake, clock, refs = stored
    changed = case("ivclms-003")
    changed["patient"]["smoking"]["pack_years"] = 16
    clock["now"] = T0 + dt.timedelta(hours=1)
    intake.update(refs["IVC-003"], intake.prepare(changed), "test", None)
    intake.retract(refs["IVC-005"], "test", None)
    found = {f.case["case_id"]: f for f in source.stream_cases(engine, Filters(), page_size=3)}
    assert sorted(found) == [c for c in ALL if c != "IVC-005"]
    assert found["IVC-003"].version == 2
    assert found["IVC-003"].case["patient"]["smoking"]["pack_years"] == 16
    assert found["IVC-003"].updated_at == T0 + dt.timedelta(hours=1)
    # since: only what changed at or after the instant (the retraction is not an active case)
    assert _ids(engine, Filters(since=T0 + dt.timedelta(minutes=30))) == ["IVC-003"]


def test_since_is_inclusive(stored):
    engine = stored[0]
    assert _ids(engine, Filters(since=T0 + dt.timedelta(minutes=7))) == ["IVC-008", "IVC-009"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (
            Filters(consent=("yes",)),
            ["IVC-001", "IVC-003", "IVC-004", "IVC-005", "IVC-006", "IVC-007", "IVC-009"],
        ),
        (Filters(consent=("no", "unknown")), ["IVC-002", "IVC-008"]),
        (Filters(institutions=(" example university hospital a",)), ["IVC-001", "IVC-004", "IVC-009"]),
        (Filters(segments=("I",)), ["IVC-002", "IVC-003", "IVC-009"]),
        (Filters(segments=("III",)), ["IVC-004", "IVC-007", "IVC-008"]),
        (Filters(segments=("I", "III")), ["IVC-002", "IVC-003", "IVC-004", "IVC-007", "IVC-008", "IVC-009"]),
        (
            Filters(diagnosed_from=dt.date(2021, 1, 1)),
            ["IVC-001", "IVC-005", "IVC-006", "IVC-007", "IVC-009"],
        ),
        (Filters(diagnosed_to=dt.date(2019, 5, 14)), ["IVC-002", "IVC-003", "IVC-008"]),
        (
            Filters(diagnosed_from=dt.date(2021, 2, 20), diagnosed_to=dt.date(2021, 5, 27)),
            ["IVC-001", "IVC-009"],
        ),
        (
            Filters(consent=("yes",), segments=("II",), diagnosed_from=dt.date(2022, 1, 1)),
            ["IVC-005", "IVC-006"],
        ),
    ],
)
def test_filters(stored, filters, expected):
    assert _ids(stored[0], filters, page_size=2) == expected


def test_explicit_case_refs(stored):
    engine, _intake, _clock, refs = stored
    wanted = (refs["IVC-002"], refs["IVC-007"], "00000000-0000-0000-0000-000000000000")
    assert _ids(engine, Filters(refs=wanted)) == ["IVC-002", "IVC-007"]
    assert _ids(engine, Filters(refs=wanted, consent=("yes",))) == ["IVC-007"]


def test_finding_12_a_pull_reads_only_the_given_source_systems(stored):
    engine = stored[0]
    hospital_a = frozenset({"urn:ivclms:example:hospital-a"})
    assert _ids(engine, Filters(sources=hospital_a), page_size=2) == ["IVC-001", "IVC-004", "IVC-009"]
    assert _ids(engine, Filters(sources=frozenset())) == []
    assert _ids(engine, Filters(sources=None)) == ALL


def test_finding_12_year_filters_select_on_the_diagnosis_year(stored):
    engine = stored[0]
    # 2021: IVC-001 (2021-02-20), IVC-009 (2021-05-27); 2017-2018: IVC-008, IVC-003.
    assert _ids(engine, Filters(diagnosed_from_year=2021, diagnosed_to_year=2021)) == ["IVC-001", "IVC-009"]
    assert _ids(engine, Filters(diagnosed_to_year=2018)) == ["IVC-003", "IVC-008"]


def test_finding_13_an_absent_consent_counts_as_unknown(cases):
    case = dict(cases[0])
    case.pop("registry_consent", None)
    assert source.matches(case, Filters(consent=("unknown",)))
    assert not source.matches(case, Filters(consent=("yes",)))
