"""What newer HL7 packages add to base R4 (service/validation/newer.json): accepted, nothing more.

Oracles: the packages themselves. hl7.terminology.r4 7.0.1, CodeSystem-v3-ActReason.json (3.1.0):
MLTRAINING "machine learning training", property subsumedBy HOPERAT; CodeSystem-v3-ActCode.json:
PREGNANT "pregnancy information sensitivity". hl7.fhir.uv.extensions.r4 5.3.0-ballot-tc1:
StructureDefinition-resource-approvalDate.json lists Group among its contexts, R4 4.0.1 does not;
neither lists Patient.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from service.validation import Validator
from service.validation.newer import DATA, derive, load

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
APPROVAL_DATE = "http://hl7.org/fhir/StructureDefinition/resource-approvalDate"


def _basic(system: str, code: str) -> dict:
    return {"resourceType": "Basic", "code": {"coding": [{"system": system, "code": code}]}}


def _errors(issues) -> list:
    return [i for i in issues if i.severity in ("error", "fatal")]


def test_codes_current_tho_added_are_accepted_and_say_where_from(validator: Validator) -> None:
    for system, code in ((ACT_REASON, "MLTRAINING"), (ACT_CODE, "PREGNANT")):
        issues = validator.validate(_basic(system, code))
        assert _errors(issues) == []
        info = [i for i in issues if i.severity == "information" and code in i.diagnostics]
        assert len(info) == 1
        assert "hl7.terminology.r4#7.0.1" in info[0].diagnostics
        assert info[0].expression == "Basic.code.coding[0]"


def test_a_code_in_neither_r4_nor_tho_is_still_an_error(validator: Validator) -> None:
    errors = _errors(validator.validate(_basic(ACT_REASON, "MLTRAINING-NOT-A-CODE")))
    assert [(e.expression, e.diagnostics) for e in errors] == [
        (
            "Basic.code.coding[0]",
            f"Unknown code 'MLTRAINING-NOT-A-CODE' in the CodeSystem '{ACT_REASON}'",
        )
    ]


def test_a_newer_code_is_in_the_is_a_branch_tho_puts_it_in(validator: Validator) -> None:
    # R4's v3-PurposeOfUse value set: v3-ActReason is-a PurposeOfUse; THO: MLTRAINING subsumedBy HOPERAT,
    # which R4 has under PurposeOfUse
    expansion = validator.terminology.expansion("http://terminology.hl7.org/ValueSet/v3-PurposeOfUse")
    assert expansion is not None
    assert expansion.contains(ACT_REASON, "HOPERAT") is True
    assert expansion.contains(ACT_REASON, "MLTRAINING") is True
    assert expansion.contains(ACT_REASON, "MLTRAINING-NOT-A-CODE") is False


def test_a_code_system_of_another_version_gets_no_newer_codes(validator: Validator) -> None:
    other = {
        "resourceType": "CodeSystem",
        "url": ACT_REASON,
        "version": "0.0.1-test",
        "status": "active",
        "content": "complete",
        "concept": [{"code": "HOPERAT"}],
    }
    errors = _errors(validator.with_resources([other]).validate(_basic(ACT_REASON, "MLTRAINING")))
    assert [e.diagnostics for e in errors] == [f"Unknown code 'MLTRAINING' in the CodeSystem '{ACT_REASON}'"]


def _with_approval_date(resource: dict) -> dict:
    return {**resource, "extension": [{"url": APPROVAL_DATE, "valueDate": "2024-01-31"}]}


def test_a_context_the_extensions_package_added_is_accepted(validator: Validator) -> None:
    group = _with_approval_date({"resourceType": "Group", "type": "person", "actual": True})
    assert _errors(validator.validate(group)) == []


def test_a_context_in_neither_is_still_an_error(validator: Validator) -> None:
    errors = _errors(validator.validate(_with_approval_date({"resourceType": "Patient"})))
    assert [(e.expression, e.diagnostics) for e in errors] == [
        ("Patient.extension[0]", f"The extension {APPROVAL_DATE} is not allowed on Patient")
    ]


def test_the_data_file_only_adds_to_base_r4(validator: Validator) -> None:
    """Every code is one the R4 CodeSystem of that version lacks, every context one R4 does not list:
    the file cannot hide a code or context that R4 has, nor change a verdict R4 already gives."""
    newer = load()
    assert newer.systems and newer.extensions
    for url, system in newer.systems.items():
        cs = validator.defs.code_system(url)
        assert cs is not None and cs.get("version") == system.r4_version, url
        r4_codes = json.dumps(cs.get("concept", []))
        assert all(f'"code": "{code}"' not in r4_codes for code in system.codes), url
    for url, ext in newer.extensions.items():
        sd = validator.defs.structure(url)
        assert sd is not None and sd.get("version") == ext.r4_version, url
        r4_contexts = {c.get("expression") for c in sd.get("context", [])}
        assert r4_contexts and not r4_contexts & set(ext.contexts), url
    assert json.loads(DATA.read_text())["packages"][0]["name"] == "hl7.terminology.r4"


def _tgz(path: Path, files: dict[str, dict]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_derive_takes_only_additions(tmp_path: Path) -> None:
    base = [
        {
            "resourceType": "CodeSystem",
            "url": "http://x/cs",
            "version": "1",
            "content": "complete",
            "concept": [{"code": "A", "concept": [{"code": "B"}]}],
        },
        {
            "resourceType": "StructureDefinition",
            "type": "Extension",
            "url": "http://x/ext",
            "version": "1",
            "context": [{"type": "element", "expression": "Patient"}],
        },
    ]
    tho = _tgz(
        tmp_path / "tho.tgz",
        {
            "package.json": {"name": "tho", "version": "9"},
            "CodeSystem-cs.json": {
                "resourceType": "CodeSystem",
                "url": "http://x/cs",
                "concept": [
                    {"code": "A"},
                    {"code": "C", "display": "C!", "property": [{"code": "subsumedBy", "valueCode": "B"}]},
                ],
            },
            "CodeSystem-other.json": {
                "resourceType": "CodeSystem",
                "url": "http://x/new",
                "concept": [{"code": "Z"}],
            },
        },
    )
    ext = _tgz(
        tmp_path / "ext.tgz",
        {
            "package.json": {"name": "ext", "version": "5"},
            "StructureDefinition-ext.json": {
                "resourceType": "StructureDefinition",
                "type": "Extension",
                "url": "http://x/ext",
                "context": [
                    {"type": "element", "expression": "Group"},
                    {"type": "fhirpath", "expression": "x"},
                ],
            },
        },
    )
    data = derive(tho, ext, base)
    assert [(p["name"], p["version"]) for p in data["packages"]] == [("tho", "9"), ("ext", "5")]
    assert data["codes"] == {
        "http://x/cs": {"r4Version": "1", "codes": {"C": {"display": "C!", "parents": ["B"]}}}
    }
    assert data["contexts"] == {"http://x/ext": {"r4Version": "1", "contexts": ["Group"]}}
