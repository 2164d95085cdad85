"""Each cross-field rule of the data set, broken once: the precise path and message."""

from __future__ import annotations

import pytest

from service.errors import Unprocessable
from service.model import validate_case


def set_(path, value):
    """A mutation that sets ``value`` at ``path`` (keys and list indices)."""

    def mutate(case):
        target = case
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def both(*mutations):
    def mutate(case):
        for m in mutations:
            m(case)

    return mutate


GRAFT_RULE = (
    "surgery[0].ivc_management.graft_material: "
    "required when method is patch_cavoplasty or interposition_graft"
)

BROKEN = {
    # dates
    "surgery before diagnosis": (
        both(
            set_(["surgery", 0, "date"], "2021-02-01"), set_(["follow_up", 0, "months_after_surgery"], None)
        ),
        "surgery[0].date: must not be before diagnosis.date",
    ),
    "follow-up before diagnosis": (
        both(
            set_(["follow_up", 0, "date"], "2021-01-01"), set_(["follow_up", 0, "months_after_surgery"], None)
        ),
        "follow_up[0].date: must not be before diagnosis.date",
    ),
    "follow-up before surgery": (
        both(
            set_(["follow_up", 0, "date"], "2021-03-01"), set_(["follow_up", 0, "months_after_surgery"], None)
        ),
        "follow_up[0].date: must not be before the first surgery (surgery[0].date)",
    ),
    "therapy ends before it starts": (
        set_(["therapies", 0, "end"], "2021-02-24"),
        "therapies[0].end: must not be before start",
    ),
    "last contact before diagnosis": (  # without the follow-up, which would be after the last contact
        both(set_(["outcome", "last_contact"], "2020-12-31"), set_(["follow_up"], [])),
        "outcome.last_contact: must not be before diagnosis.date",
    ),
    "birth after diagnosis": (
        both(set_(["patient", "birth_date"], "2021-03-01"), set_(["patient", "age_at_diagnosis"], None)),
        "patient.birth_date: must not be after diagnosis.date",
    ),
    # derived values
    "age disagrees with birth date": (
        set_(["patient", "age_at_diagnosis"], 50),
        "patient.age_at_diagnosis: must equal the age derived from birth_date and diagnosis.date (52)",
    ),
    "neither birth date nor age": (
        both(set_(["patient", "birth_date"], None), set_(["patient", "age_at_diagnosis"], None)),
        "patient.age_at_diagnosis: required when birth_date is absent",
    ),
    "follow-up months disagree with date": (
        set_(["follow_up", 0, "months_after_surgery"], 12.2),
        "follow_up[0].months_after_surgery: must agree with date within 0.1 month "
        "(12.0 months after the first surgery, surgery[0].date)",
    ),
    "follow-up without date or months": (
        both(set_(["follow_up", 0, "date"], None), set_(["follow_up", 0, "months_after_surgery"], None)),
        "follow_up[0].date: date or months_after_surgery is required",
    ),
    # graft material
    "graft without material": (
        set_(["surgery", 0, "ivc_management", "graft_material"], None),
        GRAFT_RULE,
    ),
    "patch without material": (
        set_(["surgery", 0, "ivc_management"], {"method": "patch_cavoplasty"}),
        GRAFT_RULE,
    ),
    "renal vein reconstruction without material": (
        set_(["surgery", 0, "renal_veins", 0, "management"], "reconstruction_with_graft"),
        "surgery[0].renal_veins[0].material: required when management is reconstruction_with_graft",
    ),
    # renal veins
    "nephrectomy without sacrificed vein": (
        set_(["surgery", 0, "renal_veins", 1, "management"], "reimplantation"),
        "surgery[0].renal_veins: right_kidney resected (nephrectomy) requires a right renal vein entry "
        "with management sacrificed_with_nephrectomy",
    ),
    "nephrectomy without vein entry": (
        set_(["surgery", 0, "organs_resected"], [{"organ": "left_kidney"}, {"organ": "right_kidney"}]),
        "surgery[0].renal_veins: left_kidney resected (nephrectomy) requires a left renal vein entry "
        "with management sacrificed_with_nephrectomy",
    ),
    "same side twice": (
        set_(["surgery", 0, "renal_veins", 0, "side"], "right"),
        "surgery[0].renal_veins[1].side: each side at most once per surgery",
    ),
    # segments
    "segment from above to": (
        both(set_(["diagnosis", "ivc_segment_from"], "III"), set_(["diagnosis", "ivc_segment_to"], "II")),
        "diagnosis.ivc_segment_from: must not be above ivc_segment_to (I <= II <= III)",
    ),
    # radiotherapy
    "total dose disagrees": (
        set_(["therapies", 0, "radiotherapy", "total_dose_gy"], 50.0),
        "therapies[0].radiotherapy.total_dose_gy: must equal fractions x dose_per_fraction_gy (+ boost_gy) "
        "within 0.01 Gy (expected 50.4)",
    ),
    "total dose ignores boost": (
        set_(["therapies", 0, "radiotherapy", "boost_gy"], 10),
        "therapies[0].radiotherapy.total_dose_gy: must equal fractions x dose_per_fraction_gy (+ boost_gy) "
        "within 0.01 Gy (expected 60.4)",
    ),
    "radiotherapy on another kind": (
        set_(["therapies", 1, "radiotherapy"], {"total_dose_gy": 10}),
        "therapies[1].radiotherapy: only allowed when kind is radiotherapy",
    ),
    "lifelong with duration": (
        set_(["therapies", 1, "lifelong"], True),
        "therapies[1].duration_months: not allowed when lifelong is true",
    ),
    # complications
    "no complications but listed": (
        set_(["postoperative", "had_complications"], False),
        "postoperative.complications: must be empty when had_complications is false",
    ),
    "complications but none listed": (
        set_(["postoperative", "complications"], []),
        "postoperative.complications: at least one required when had_complications is true",
    ),
    "complications listed without the flag": (
        set_(["postoperative", "had_complications"], None),
        "postoperative.had_complications: must be true when complications are listed",
    ),
    # other needs text
    "other symptom": (
        set_(["presentation", "symptoms", 0, "symptom"], "other"),
        "presentation.symptoms[0].text: required when symptom is other",
    ),
    "other history": (
        set_(["patient", "history", 1, "text"], None),
        "patient.history[1].text: required when condition is other",
    ),
    "other ihc marker": (
        set_(["pathology", "ihc", 0, "marker"], "other"),
        "pathology.ihc[0].text: required when marker is other",
    ),
    "other complication": (
        set_(["postoperative", "complications", 0, "type"], "other"),
        "postoperative.complications[0].text: required when type is other",
    ),
    "other drug": (
        set_(["therapies", 1, "drugs", 0, "agent"], "other"),
        "therapies[1].drugs[0].text: required when agent is other",
    ),
    "other organ": (
        set_(["surgery", 0, "organs_resected"], [{"organ": "right_kidney"}, {"organ": "other"}]),
        "surgery[0].organs_resected[1].detail: required when organ is other",
    ),
    "other metastasis site": (
        set_(["diagnosis", "metastases"], [{"site": "other", "certainty": "suspected"}]),
        "diagnosis.metastases[0].text: required when site is other",
    ),
    # ihc
    "ki67 without percent": (
        set_(["pathology", "ihc", 4], {"marker": "ki67", "result": "positive"}),
        "pathology.ihc[4].percent: required when marker is ki67",
    ),
    "marker without result or percent": (
        set_(["pathology", "ihc", 0, "result"], None),
        "pathology.ihc[0].result: result or percent required",
    ),
    # outcome
    "death date while alive": (
        set_(["outcome", "death_date"], "2024-05-01"),  # after the last contact (2024-04-20)
        "outcome.death_date: only allowed when vital_status is dead",
    ),
    "death cause while alive": (
        set_(["outcome", "death_cause"], "sarcoma"),
        "outcome.death_cause: only allowed when vital_status is dead",
    ),
    # care plan
    "performed surgery does not exist": (
        set_(["care_plan", "activities", 1, "performed"], "surgery[1]"),
        "care_plan.activities[1].performed: surgery[1] does not exist",
    ),
    "performed points at the wrong list": (
        set_(["care_plan", "activities", 1, "performed"], "therapies[0]"),
        "care_plan.activities[1].performed: must be a reference surgery[i] when kind is surgery",
    ),
    "performed therapy of another kind": (
        set_(["care_plan", "activities", 0, "performed"], "therapies[1]"),
        "care_plan.activities[0].performed: therapies[1] is not a radiotherapy therapy",
    ),
    "performed malformed": (
        set_(["care_plan", "activities", 2, "performed"], "therapy 2"),
        "care_plan.activities[2].performed: must be a reference therapies[i] when kind is anticoagulation",
    ),
    "surveillance without interval": (
        set_(["care_plan", "activities", 3, "every_months"], None),
        "care_plan.activities[3].every_months: required when kind is surveillance_imaging",
    ),
    "surveillance without modality": (
        set_(["care_plan", "activities", 3, "modality"], None),
        "care_plan.activities[3].modality: required when kind is surveillance_imaging",
    ),
    "surveillance without period": (
        set_(["care_plan", "activities", 3, "for_years"], None),
        "care_plan.activities[3].for_years: required when kind is surveillance_imaging",
    ),
    "surveillance performed": (
        set_(["care_plan", "activities", 3, "performed"], "surgery[0]"),
        "care_plan.activities[3].performed: not allowed when kind is surveillance_imaging",
    ),
    "modality on surgery": (
        set_(["care_plan", "activities", 1, "modality"], "ct"),
        "care_plan.activities[1].modality: only allowed when kind is surveillance_imaging",
    ),
}


@pytest.mark.parametrize(("mutate", "expected"), list(BROKEN.values()), ids=list(BROKEN))
def test_each_broken_rule_names_the_element_and_the_rule(example, mutate, expected):
    mutate(example)
    with pytest.raises(Unprocessable) as caught:
        validate_case(example)
    issues = caught.value.issues
    assert [i.diagnostics for i in issues] == [expected]
    assert issues[0].expression == expected.split(": ")[0]
    assert issues[0].code in ("business-rule", "required")


def test_rules_hold_in_the_example(example):
    assert validate_case(example) == example


def test_a_death_before_the_diagnosis_is_refused_and_so_is_everything_after_it(example):
    """The diagnosis, operation, follow-up, therapies and last contact of the example all come after a
    death on 2021-01-01: each is named (rules.nothing_after_death), the death first."""
    example["outcome"].update({"vital_status": "dead", "death_date": "2021-01-01"})
    with pytest.raises(Unprocessable) as caught:
        validate_case(example)
    found = [i.diagnostics for i in caught.value.issues]
    assert found[0] == "outcome.death_date: must not be before diagnosis.date"
    assert "outcome.last_contact: must not be after outcome.death_date (2021-01-01)" in found
    assert "surgery[0].date: must not be after outcome.death_date (2021-01-01)" in found


def test_several_rules_broken_are_all_reported(example):
    example["surgery"][0]["ivc_management"]["graft_material"] = None
    example["diagnosis"]["ivc_segment_from"] = "III"
    example["outcome"]["death_date"] = "2024-05-01"
    with pytest.raises(Unprocessable) as caught:
        validate_case(example)
    assert {i.expression for i in caught.value.issues} == {
        "surgery[0].ivc_management.graft_material",
        "diagnosis.ivc_segment_from",
        "outcome.death_date",
    }


def test_within_tolerance_is_accepted(example):
    example["therapies"][0]["radiotherapy"]["total_dose_gy"] = 50.41
    example["follow_up"][0]["months_after_surgery"] = 12.1
    case = validate_case(example)
    assert case["follow_up"][0]["months_after_surgery"] == 12.1  # given values are kept


def test_a_single_segment_and_ordered_span_are_valid(example):
    example["diagnosis"]["ivc_segment_from"] = "I"
    example["diagnosis"]["ivc_segment_to"] = "III"
    validate_case(example)


def test_codes_named_by_the_rules_exist_in_the_code_tables():
    from service.codes import table
    from service.model.rules import RULE_CODES

    for name, values in RULE_CODES.items():
        assert set(values) <= set(table(name).keys()), name
    therapy_activities = set(table("plan-activity").keys()) - {"surgery", "surveillance_imaging"}
    assert therapy_activities <= set(table("therapy-kind").keys())
