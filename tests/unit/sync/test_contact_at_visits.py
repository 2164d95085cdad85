"""A pulled follow-up visit is a contact: ``contact_at_visits`` moves a stored last contact forward to a
later visit (at the visit's precision) and infers nothing else. Without it, the intake rule "a follow-up
is not after the last contact" (outside review, issue 15) would reject every visit an EHR adds."""

from __future__ import annotations

from typing import Any

from service.sync.pull import contact_at_visits


def _case(last: Any, *visits: Any) -> dict[str, Any]:
    return {
        "outcome": {"vital_status": "alive", "last_contact": last},
        "follow_up": [{"date": d, "disease_status": "ned"} for d in visits],
    }


def test_a_later_visit_becomes_the_last_contact() -> None:
    assert contact_at_visits(_case("2024-04-20", "2024-03-01", "2024-10-01"))["outcome"]["last_contact"] == (
        "2024-10-01"
    )


def test_a_visit_at_coarser_precision_moves_it_only_when_certainly_later() -> None:
    assert contact_at_visits(_case("2024-04-20", "2025"))["outcome"]["last_contact"] == "2025"
    assert contact_at_visits(_case("2024-04-20", "2024"))["outcome"]["last_contact"] == "2024-04-20"


def test_nothing_moves_without_a_later_visit_or_a_known_last_contact() -> None:
    same = _case("2024-04-20", "2024-01-05")
    assert contact_at_visits(same) is same
    unknown = _case("unknown", "2024-10-01")
    assert contact_at_visits(unknown) is unknown
    interval = _case(None, "2024-10-01")
    assert contact_at_visits(interval) is interval


def test_the_intervals_of_the_earlier_contact_go_with_it() -> None:
    # second outside review: a recorded 36.3 months after surgery contradicted the moved last contact
    case = _case("2024-04-20", "2025-01-15")
    case["outcome"]["last_contact_months_after_surgery"] = 36.3
    case["outcome"]["last_contact_months_after_diagnosis"] = 38.0
    outcome = contact_at_visits(case)["outcome"]
    assert outcome["last_contact"] == "2025-01-15"
    assert outcome["last_contact_months_after_surgery"] is None
    assert outcome["last_contact_months_after_diagnosis"] is None
    kept = _case("2024-04-20", "2024-01-05")
    kept["outcome"]["last_contact_months_after_surgery"] = 36.3
    assert contact_at_visits(kept)["outcome"]["last_contact_months_after_surgery"] == 36.3
