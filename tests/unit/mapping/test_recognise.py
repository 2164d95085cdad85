"""Plain R4 resources as an EHR sends them -> ``profile_bundle`` -> ``bundle_to_case`` -> the case."""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from service.codes import CANONICAL
from service.mapping.forward import case_to_bundle
from service.mapping.recognise import Profiled, load_concept_maps, profile_bundle
from service.mapping.reverse import bundle_to_case
from service.mapping.spec import IDENTIFIER_SYSTEM, MappingError, case_get, case_set, case_tokens
from service.mapping.spec import PROFILE_PREFIX as PROFILE
from service.model import validate_case
from tests.strategies import valid_cases

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-*.json"))
NOW = "2026-01-01T00:00:00Z"
SEED = 20260101
PROJECT = f"{CANONICAL}/CodeSystem/"
HOSPITAL = "https://hospital.example.org/fhir/CodeSystem/"
EHR = "https://ehr.example.org/fhir"

_SAME_DAY = (
    "same-day results are ordered by the lab-test table (egfr before creatinine); "
    "the case lists creatinine first"
)
# Lists whose order plain R4 does not carry, so recognition orders them by its own rule (date, then
# code-table order, then bundle order) and the example's order cannot come back. They are compared as
# the same items in recognition's order, with references to them (care_plan performed) renumbered.
# Nested lists come before the list that holds them.
REORDERED: dict[str, dict[str, str]] = {
    "ivclms-003": {"postoperative.renal_function": _SAME_DAY},
    "ivclms-005": {"pathology.ihc": "undated; ki67 comes before other in the ihc-marker table"},
    "ivclms-006": {"postoperative.renal_function": _SAME_DAY},
    "ivclms-007": {
        "therapies[2].drugs": "two drugs coded `other` differ only in free text; the shuffled bundle decides",
        "therapies": "the case lists doxorubicin (started 2023-03-27) before LMWH (2023-03-16); "
        "recognition orders therapies by start date",
    },
    "ivclms-009": {"postoperative.renal_function": _SAME_DAY},
}
# A graft-patency Observation carries neither a date nor a reference to its follow-up visit
# (case-fhir.yaml gives it only `subject`), so with more than one visit it cannot be placed: it is
# reported as an Issue and the visit's graft_patency reads back null. Giving the template the visit
# date (`{field: date, path: effectiveDateTime, as: date}`) would place it by date; the test accepts
# either outcome, but never a wrong value.
UNPLACEABLE = "graft-patency"


def example(path: Path) -> dict[str, Any]:
    return validate_case(json.loads(path.read_text()))


def find(stem: str) -> Path:
    return next(p for p in EXAMPLES if p.name.startswith(stem))


def plain(bundle: dict[str, Any], *, seed: int = SEED, relative: bool = False) -> dict[str, Any]:
    """What an EHR sends: no profiles, no business identifiers, the standard coding alone where there
    is one, entries in any order, no Provenance. ``relative``: ``Type/id`` references instead of
    ``urn:uuid:`` fullUrls."""
    entries = []
    for entry in bundle["entry"]:
        resource = copy.deepcopy(entry["resource"])
        if resource["resourceType"] == "Provenance":
            continue
        del resource["meta"]
        others = [i for i in resource.pop("identifier") if i["system"] != IDENTIFIER_SYSTEM]
        if others:
            resource["identifier"] = others
        standard_only(resource)
        entries.append({"fullUrl": entry["fullUrl"], "resource": resource})
    random.Random(seed).shuffle(entries)
    if relative:
        ids = {e["fullUrl"]: f"{e['resource']['resourceType']}/r{i}" for i, e in enumerate(entries)}
        for entry in entries:
            entry["resource"]["id"] = ids[entry["fullUrl"]].split("/")[1]
            entry["fullUrl"] = f"{EHR}/{ids[entry['fullUrl']]}"
        text = json.dumps(entries)
        for old, new in ids.items():
            text = text.replace(f'"reference": "{old}"', f'"reference": "{new}"')
        entries = json.loads(text)
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


def standard_only(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            standard_only(item)
    elif isinstance(node, dict):
        codings = node.get("coding")
        if isinstance(codings, list) and any(not c["system"].startswith(PROJECT) for c in codings):
            node["coding"] = [c for c in codings if not c["system"].startswith(PROJECT)]
        for value in node.values():
            standard_only(value)


def profiled_entry(bundle: dict[str, Any], template: str) -> dict[str, Any]:
    return next(e for e in bundle["entry"] if e["resource"]["meta"]["profile"][0] == PROFILE + template)


def profile(bundle: dict[str, Any], case: dict[str, Any], **kwargs: Any) -> Profiled:
    return profile_bundle(bundle, source_system=case["source_system"], case_id=case["case_id"], **kwargs)


def reorder(expected: dict[str, Any], actual: dict[str, Any], path: str) -> dict[str, Any]:
    """``expected`` with the list at ``path`` in ``actual``'s order (the same items, or the test fails)
    and every element key pointing into it renumbered."""
    tokens = case_tokens(path)
    want, got = case_get(expected, tokens), case_get(actual, tokens)
    assert len(want) == len(got), path
    free = list(range(len(got)))
    moved: dict[int, int] = {}
    for i, item in enumerate(want):
        j = next((j for j in free if got[j] == item), None)
        assert j is not None, f"{path}[{i}] is missing from the result"
        free.remove(j)
        moved[i] = j
    out = copy.deepcopy(expected)
    case_set(out, tokens, [want[i] for i in sorted(moved, key=moved.__getitem__)])
    pattern = re.compile(rf"^{re.escape(path)}\[(\d+)\]")

    def renumber(node: Any) -> Any:
        if isinstance(node, str):
            return pattern.sub(lambda m: f"{path}[{moved[int(m.group(1))]}]", node)
        if isinstance(node, list):
            return [renumber(item) for item in node]
        if isinstance(node, dict):
            return {key: renumber(value) for key, value in node.items()}
        return node

    return {key: renumber(value) for key, value in out.items()}


def expected_of(path: Path, actual: dict[str, Any], profiled: Profiled) -> dict[str, Any]:
    """The example, adjusted only where the constants above say plain R4 cannot give it back."""
    expected = example(path)
    for list_path in REORDERED.get(path.stem[:10], {}):
        expected = reorder(expected, actual, list_path)
    unplaced = 0
    for i, visit in enumerate(expected["follow_up"]):
        got = actual["follow_up"][i]["graft_patency"]
        if got is None and visit["graft_patency"] is not None:
            visit["graft_patency"] = None
            unplaced += 1
    reported = [issue for issue in profiled.issues if issue.message.startswith(f"{UNPLACEABLE}:")]
    assert len(reported) == unplaced
    assert len(profiled.issues) == unplaced, [str(issue) for issue in profiled.issues]
    return expected


@pytest.mark.parametrize("relative", [False, True], ids=["urn-uuid", "relative"])
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_plain_examples_read_back(path: Path, relative: bool):
    case = example(path)
    profiled = profile(plain(case_to_bundle(case, now=NOW), relative=relative), case)
    actual = bundle_to_case(profiled.bundle)
    assert actual == expected_of(path, actual, profiled)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_cases())
def test_every_resource_of_any_case_is_placed_or_reported(case: dict[str, Any]):
    # A diagnosis tumour size measured by pathology is written exactly like the pathological size
    # (the module's known ambiguity), so generated cases measure it by imaging.
    for size in case["diagnosis"]["tumour_size"]:
        size["method"] = "imaging"
    # A plain Procedure coded only data-absent-reason `unknown` on the IVC is both a resection and an
    # IVC management (its code is what tells them apart): it is reported, not placed, so generated
    # cases here keep those two codes known (the placement of unknowns is tested on profiled bundles).
    for surgery in case["surgery"]:
        if surgery["resection"] == "unknown":
            surgery["resection"] = "segmental"
        if surgery["ivc_management"]["method"] == "unknown":
            surgery["ivc_management"]["method"] = "ligation"
    case = validate_case(case)
    made = case_to_bundle(case, now=NOW)
    profiled = profile(plain(made), case)
    assert len(profiled.bundle["entry"]) + len(profiled.issues) == len(made["entry"]) - 1  # no Provenance
    assert {i.message.split(":")[0] for i in profiled.issues} <= {UNPLACEABLE}
    bundle_to_case(profiled.bundle)  # validates


def test_exceptions_name_real_examples_and_paths():
    stems = {p.stem[:10] for p in EXAMPLES}
    for stem, lists in REORDERED.items():
        assert stem in stems
        for list_path in lists:
            assert isinstance(case_get(example(find(stem)), case_tokens(list_path)), list), list_path


def test_profiled_bundle_has_the_shape_of_case_to_bundle():
    case = example(find("ivclms-001"))
    made = case_to_bundle(case, now=NOW)
    profiled = profile(plain(made), case).bundle
    assert profiled["type"] == "transaction"
    mine = {
        e["fullUrl"]: (e["request"], e["resource"]["meta"], e["resource"]["identifier"][0])
        for e in made["entry"]
        if e["resource"]["resourceType"] != "Provenance"
    }
    for entry in profiled["entry"]:
        request, meta, identifier = mine[entry["fullUrl"]]
        assert entry["request"] == request
        assert entry["resource"]["meta"] == meta
        assert entry["resource"]["identifier"][0] == identifier


@pytest.mark.parametrize("stem", ["ivclms-003", "ivclms-005"])
def test_element_keys_do_not_depend_on_bundle_order(stem: str):
    case = example(find(stem))
    made = case_to_bundle(case, now=NOW)
    assert profile(plain(made, seed=1), case).bundle == profile(plain(made, seed=2), case).bundle


def test_case_id_defaults_to_the_patients_identifier():
    case = example(find("ivclms-001"))
    profiled = profile_bundle(plain(case_to_bundle(case, now=NOW)), source_system=case["source_system"])
    assert bundle_to_case(profiled.bundle)["case_id"] == case["patient"]["identifier"]["value"]


def test_children_without_part_of_are_placed_by_shared_values_or_reported():
    case = example(find("ivclms-001"))
    bundle = plain(case_to_bundle(case, now=NOW))
    for entry in bundle["entry"]:
        entry["resource"].pop("partOf", None)
    profiled = profile(bundle, case)
    # The surgery's children share its date (`^.date`); the LMWH's `^.status` (completed) fits both
    # therapies, so it cannot be placed and is reported instead of guessed.
    assert [(i.resource.split()[0], i.message) for i in profiled.issues] == [
        ("MedicationStatement", "medication: nothing tells which of 2 candidates is its parent item")
    ]
    expected = copy.deepcopy(case)
    expected["therapies"][1]["drugs"] = []
    assert bundle_to_case(profiled.bundle) == expected


# ---- hospital codes ---------------------------------------------------------------------------


def hospital_coded(bundle: dict[str, Any]) -> dict[str, Any]:
    """Example 001 with some codes replaced by those of mappings/local/example-hospital.json."""
    local = {
        "en_bloc_radical": ("procedures", "CHIR-VCI-ENBLOC"),
        "interposition_graft": ("procedures", "CHIR-VCI-PONTAGE"),
        "718-7": ("lab", "HB"),
        "2160-0": ("lab", "CREA"),
        "lmwh": ("drugs", "ENOXA"),
    }
    for entry in bundle["entry"]:
        resource = entry["resource"]
        for element in ("code", "medicationCodeableConcept"):
            concept = resource.get(element)
            code = concept["coding"][0]["code"] if concept else None
            if code in local:
                system, value = local[code]
                resource[element] = {"coding": [{"system": HOSPITAL + system, "code": value}]}
    return bundle


def test_hospital_codes_are_translated_through_local_concept_maps():
    case = example(find("ivclms-001"))
    bundle = hospital_coded(plain(case_to_bundle(case, now=NOW)))
    profiled = profile(bundle, case)
    assert not profiled.issues
    assert bundle_to_case(profiled.bundle) == case
    surgery = next(
        e["resource"]
        for e in profiled.bundle["entry"]
        if e["resource"]["meta"]["profile"][0] == PROFILE + "surgery"
    )
    assert surgery["code"]["coding"][0] == {"system": HOSPITAL + "procedures", "code": "CHIR-VCI-ENBLOC"}
    assert surgery["code"]["coding"][1]["code"] == "en_bloc_radical"


def test_hospital_code_without_translation_is_reported():
    case = example(find("ivclms-001"))
    profiled = profile(hospital_coded(plain(case_to_bundle(case, now=NOW))), case, local_maps={})
    messages = [str(issue) for issue in profiled.issues]
    assert any(
        f"{HOSPITAL}procedures|CHIR-VCI-ENBLOC" in m and "fits none of the IVC-LMS profiles" in m
        for m in messages
    )
    assert any("MedicationStatement" in m and "ENOXA" in m for m in messages)


def test_concept_map_targets_must_be_codes_of_mappings(tmp_path: Path):
    source = (ROOT / "mappings/local/example-hospital.json").read_text()
    (tmp_path / "bad.json").write_text(source.replace('"code": "ldh"', '"code": "lactate"'))
    with pytest.raises(MappingError, match=r"bad.json: .*\|LDH -> .*\|lactate"):
        load_concept_maps(tmp_path)


def test_only_usable_equivalences_translate(tmp_path: Path):
    source = (ROOT / "mappings/local/example-hospital.json").read_text()
    (tmp_path / "map.json").write_text(source.replace('"equivalence": "wider"', '"equivalence": "narrower"'))
    maps = load_concept_maps(tmp_path)
    assert (HOSPITAL + "drugs", "ENOXA") not in maps
    assert maps[(HOSPITAL + "lab", "HB")][0]["code"] == "718-7"


# ---- what cannot be read --------------------------------------------------------------------------


def test_unrecognised_resources_are_reported_and_left_out():
    case = example(find("ivclms-001"))
    bundle = plain(case_to_bundle(case, now=NOW))
    bundle["entry"] += [
        {
            "fullUrl": "urn:uuid:0b7f3c1e-0000-4000-8000-000000000001",
            "resource": {"resourceType": "Encounter"},
        },
        {
            "fullUrl": "urn:uuid:0b7f3c1e-0000-4000-8000-000000000002",
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": HOSPITAL + "observations", "code": "TA"}]},
            },
        },
    ]
    profiled = profile(bundle, case)
    assert [(i.entry, i.resource.split()[0]) for i in profiled.issues] == [
        (len(bundle["entry"]) - 2, "Encounter"),
        (len(bundle["entry"]) - 1, "Observation"),
    ]
    assert f"{HOSPITAL}observations|TA" in profiled.issues[1].message
    assert bundle_to_case(profiled.bundle) == case


def test_of_two_resources_for_one_item_the_latest_is_kept_and_the_other_reported():
    case = example(find("ivclms-001"))
    made = case_to_bundle(case, now=NOW)
    url = next(
        e["fullUrl"] for e in made["entry"] if e["resource"]["meta"]["profile"][0] == PROFILE + "vital-status"
    )
    bundle = plain(made)
    vital = next(e for e in bundle["entry"] if e["fullUrl"] == url)
    older = copy.deepcopy(vital)
    older["fullUrl"] = "urn:uuid:0b7f3c1e-0000-4000-8000-000000000003"
    older["resource"]["effectiveDateTime"] = "2023-01-01"
    bundle["entry"].insert(0, older)
    before = copy.deepcopy(bundle)
    profiled = profile(bundle, case)
    assert bundle == before  # the input is left alone
    assert [(i.entry, i.message) for i in profiled.issues] == [
        (0, f"vital-status: outcome is already given by entry[{bundle['entry'].index(vital)}]")
    ]
    assert bundle_to_case(profiled.bundle) == case


def test_a_patient_is_required():
    case = example(find("ivclms-001"))
    bundle = plain(case_to_bundle(case, now=NOW))
    patient = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    bundle["entry"].remove(patient)
    with pytest.raises(MappingError, match="0 Patients"):
        profile(bundle, case)
    bundle["entry"] += [patient, copy.deepcopy(patient)]
    with pytest.raises(MappingError, match="2 Patients"):
        profile(bundle, case)


def test_only_transaction_batch_or_collection_bundles():
    case = example(find("ivclms-001"))
    bundle = plain(case_to_bundle(case, now=NOW))
    bundle["type"] = "searchset"
    with pytest.raises(MappingError, match="Bundle of type"):
        profile(bundle, case)
