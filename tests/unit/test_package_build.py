"""The generated terminology of profiles/: up to date, traceable to codes.yaml, and well formed."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from service import package_build
from service.codes import CANONICAL, systems, tables
from service.mapping.spec import spec
from service.package_build import PROFILES_DIR, build, check, main

PROJECT_VERSION = tomllib.loads((PROFILES_DIR.parent / "pyproject.toml").read_text())["project"]["version"]
"""The one place the version is written; the package, its resources and the service report it."""
KEBAB_ID = re.compile(r"^ivclms-[a-z0-9]+(-[a-z0-9]+)*$")


def _resources() -> dict[str, dict[str, Any]]:
    return package_build.scan(PROFILES_DIR)


def _of_type(resource_type: str) -> list[dict[str, Any]]:
    return [r for r in _resources().values() if r["resourceType"] == resource_type]


def _verified() -> dict[tuple[str, str], str]:
    """(system, code) -> display of every verified standard coding in codes.yaml, plus FHIR codes."""
    out: dict[tuple[str, str], str] = {}
    fhir_code_system = systems()[package_build.DEFAULT_FHIR_CODE_SYSTEM_ALIAS]
    for table in tables().values():
        for value in table.values.values():
            if value.standard is not None:
                out[(value.standard.system, value.standard.code)] = value.standard.display
            if table.fhir_code:
                out[(fhir_code_system, value.key)] = value.display
    # FHIR R4 CodeSystem data-absent-reason (terminology.md "Data absent reason", verified): the codes
    # and displays as the R4 definitions give them
    dar = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
    out |= {(dar, "unknown"): "Unknown", (dar, "not-applicable"): "Not Applicable"}
    return out


def _project_concepts() -> dict[str, dict[str, str]]:
    return {cs["url"]: {c["code"]: c["display"] for c in cs["concept"]} for cs in _of_type("CodeSystem")}


def test_every_codesystem_is_a_table_or_a_system_of_the_mapping_codes():
    mapping = {c["system"]: c for c in spec().codes.values()}
    for cs in _of_type("CodeSystem"):
        if cs["id"].removeprefix("ivclms-") in tables():
            continue
        assert cs["url"] in mapping, cs["url"]
        expected = [(str(c["code"]), c["display"]) for c in spec().codes.values() if c["system"] == cs["url"]]
        assert [(c["code"], c["display"]) for c in cs["concept"]] == expected
        assert cs["count"] == len(expected)


# -- up to date -------------------------------------------------------------------------------------------


def test_committed_package_is_up_to_date():
    assert check(PROFILES_DIR) == [], "run: python -m service.package_build"


def test_check_flag_passes_on_the_committed_package(capsys):
    assert main(["--check"]) == 0
    assert capsys.readouterr().out == ""


def test_one_codesystem_valueset_and_conceptmap_per_table():
    names = set(_resources())
    for name, table in tables().items():
        assert (f"CodeSystem-ivclms-{name}.json" in names) is not table.fhir_code
        assert f"ValueSet-ivclms-{name}-vs.json" in names
        has_standard = any(v.standard for v in table.values.values())
        assert (f"ConceptMap-ivclms-{name}-to-standard.json" in names) is has_standard


# -- traceable to codes.yaml --------------------------------------------------------------------------------


def _table_codesystems() -> list[dict[str, Any]]:
    return [cs for cs in _of_type("CodeSystem") if cs["id"].removeprefix("ivclms-") in tables()]


def _table_conceptmaps() -> list[dict[str, Any]]:
    return [cm for cm in _of_type("ConceptMap") if cm["id"].endswith("-to-standard")]


def test_codesystems_hold_exactly_the_table_values():
    for cs in _table_codesystems():
        table = tables()[cs["id"].removeprefix("ivclms-")]
        assert cs["url"] == table.system
        assert [(c["code"], c["display"]) for c in cs["concept"]] == [
            (v.key, v.display) for v in table.values.values()
        ]
        assert cs["count"] == len(table.values)
        assert (cs["content"], cs["caseSensitive"], cs["status"]) == ("complete", True, "active")


def test_valueset_codes_are_project_codes_or_verified_standard_codes():
    project = _project_concepts()
    verified = _verified()
    for vs in _of_type("ValueSet"):
        table = tables()[vs["id"].removeprefix("ivclms-").removesuffix("-vs")]
        assert vs["url"] == table.valueset
        included: set[tuple[str, str]] = set()
        for include in vs["compose"]["include"]:
            system = include["system"]
            for concept in include["concept"]:
                pair = (system, concept["code"])
                if system in project:
                    assert system == table.system, (vs["id"], system)
                    assert project[system].get(concept["code"]) == concept["display"], (vs["id"], pair)
                else:
                    assert verified.get(pair) == concept["display"], (vs["id"], pair)
                included.add(pair)
        # ... and every value of the table is in it, by its project code and by its standard code.
        for value in table.values.values():
            if not table.fhir_code:
                assert (table.system, value.key) in included
            if value.standard is not None:
                assert (value.standard.system, value.standard.code) in included


def _standard_codings(resource: dict[str, Any]) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    if resource["resourceType"] == "ValueSet":
        for include in resource["compose"]["include"]:
            if not include["system"].startswith(CANONICAL):
                out += [(include["system"], c["code"], c["display"]) for c in include["concept"]]
    if resource["resourceType"] == "ConceptMap" and resource["id"].endswith("-to-standard"):
        for group in resource["group"]:
            for element in group["element"]:
                out += [(group["target"], t["code"], t["display"]) for t in element["target"]]
    return out


def test_every_standard_code_in_the_package_is_verified_in_codes_yaml():
    verified = _verified()
    seen = 0
    for resource in _resources().values():
        for system, code, display in _standard_codings(resource):
            assert verified.get((system, code)) == display, (resource["id"], system, code)
            seen += 1
    assert seen >= len({k for k in verified if not k[0].startswith(CANONICAL)})


def test_conceptmaps_map_each_project_code_to_its_own_standard_code_and_name_the_source():
    raw = package_build._raw_tables()
    for cm in _table_conceptmaps():
        table = tables()[cm["id"].removeprefix("ivclms-").removesuffix("-to-standard")]
        assert cm["sourceCanonical"] == table.valueset
        assert cm["description"]
        mapped = {}
        for group in cm["group"]:
            assert group["source"] == table.system
            for element in group["element"]:
                (target,) = element["target"]
                assert target["equivalence"] == "equivalent"
                source = raw[table.name]["values"][
                    package_build._yaml_key(raw[table.name]["values"], element["code"])
                ]
                assert source["standard"]["source"] in target["comment"]
                mapped[element["code"]] = (group["target"], target["code"])
        expected = {
            v.key: (v.standard.system, v.standard.code)
            for v in table.values.values()
            if v.standard is not None
        }
        assert mapped == expected


# -- well formed --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n in _resources() if package_build.is_own(n)))
def test_generated_resource_parses_with_the_r4b_models(name):
    resource = _resources()[name]
    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert model.get_resource_type() == resource["resourceType"]


def test_ids_urls_and_file_names_follow_the_naming():
    for name, resource in _resources().items():
        rtype, rid = resource["resourceType"], resource["id"]
        assert name == f"{rtype}-{rid}.json"
        # A logical model's id is its type name (FHIR: the type's tail is the root element path).
        assert KEBAB_ID.match(rid) or resource.get("kind") == "logical", rid
        assert resource["url"] == f"{CANONICAL}/{rtype}/{rid}"
        if not package_build.is_own(name):
            continue
        assert resource["version"] == PROJECT_VERSION
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]*", resource["name"]), resource["name"]
        assert resource["description"]
        if rtype == "ValueSet":
            assert rid.endswith("-vs") and resource["name"].endswith("VS")


def test_the_version_comes_from_pyproject_and_this_release_bumped_it():
    from service import __version__

    assert __version__ == package_build.VERSION == PROJECT_VERSION
    # the profiles changed in this release (issue 15): the next minor after the first release 0.1.0
    assert tuple(int(n) for n in PROJECT_VERSION.split(".")) >= (0, 2, 0)


def test_package_manifest():
    manifest = json.loads((PROFILES_DIR / "package.json").read_text())
    assert manifest["name"] == "ivclms.fhir"
    assert manifest["version"] == PROJECT_VERSION
    assert manifest["fhirVersions"] == ["4.0.1"]
    assert manifest["type"] == "fhir.ig"
    assert manifest["canonical"] == manifest["url"] == CANONICAL
    assert manifest["dependencies"] == {"hl7.fhir.r4.core": "4.0.1"}
    assert manifest["license"] == "Apache-2.0"
    assert manifest["title"] and manifest["description"] and manifest["author"]


def test_index_lists_every_resource_file():
    index = json.loads((PROFILES_DIR / ".index.json").read_text())
    assert index["index-version"] == 1
    resources = _resources()
    assert [e["filename"] for e in index["files"]] == sorted(resources)
    for entry in index["files"]:
        resource = resources[entry["filename"]]
        for key in ("resourceType", "id", "url", "version"):
            assert entry[key] == resource[key]


def test_files_are_deterministic_json():
    own = [name for name in _resources() if package_build.is_own(name)]
    for name in [*own, "package.json", ".index.json"]:
        path = PROFILES_DIR / name
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n", path.name


# -- the generator's own behaviour ---------------------------------------------------------------------------


@pytest.fixture
def package_dir(tmp_path: Path) -> Path:
    target = tmp_path / "profiles"
    build(target)
    return target


def test_build_into_an_empty_folder_matches_the_committed_package(package_dir):
    committed = {p.name for p in PROFILES_DIR.glob("*.json") if package_build.is_own(p.name)}
    built = {p.name for p in package_dir.glob("*.json") if package_build.is_own(p.name)}
    assert built == committed
    for name in built:
        assert (package_dir / name).read_text() == (PROFILES_DIR / name).read_text()
    assert build(package_dir) == []  # a second run changes nothing


def test_stale_generated_files_are_removed_and_other_files_kept(package_dir):
    side_vs = json.loads((package_dir / "ValueSet-ivclms-side-vs.json").read_text())
    stale = package_dir / "ValueSet-ivclms-no-longer-a-table-vs.json"
    stale.write_text(json.dumps({**side_vs, "id": "ivclms-no-longer-a-table-vs"}))
    hand_written = package_dir / "ValueSet-ivclms-hand-written-vs.json"
    hand_written.write_text(json.dumps({**side_vs, "id": "ivclms-hand-written-vs", "description": "by hand"}))
    other = {
        "resourceType": "StructureDefinition",
        "id": "hospital-profile",
        "url": "https://hospital.example.org/fhir/StructureDefinition/hospital-profile",
        "version": "0.1.0",
        "kind": "resource",
        "type": "Observation",
    }
    (package_dir / "StructureDefinition-hospital-profile.json").write_text(json.dumps(other))
    (package_dir / "README.md").write_text("kept\n")
    assert "stale: ValueSet-ivclms-no-longer-a-table-vs.json" in check(package_dir)

    assert "removed: ValueSet-ivclms-no-longer-a-table-vs.json" in build(package_dir)

    assert not stale.exists()
    assert json.loads(hand_written.read_text())["description"] == "by hand"
    assert (package_dir / "README.md").read_text() == "kept\n"
    index = json.loads((package_dir / ".index.json").read_text())
    (entry,) = [e for e in index["files"] if e["filename"] == "StructureDefinition-hospital-profile.json"]
    assert entry == {"filename": "StructureDefinition-hospital-profile.json", **other}
    assert "ValueSet-ivclms-hand-written-vs.json" in {e["filename"] for e in index["files"]}
    assert check(package_dir) == []


def test_check_reports_missing_and_changed_files(package_dir, capsys):
    (package_dir / "CodeSystem-ivclms-side.json").unlink()
    vs_path = package_dir / "ValueSet-ivclms-side-vs.json"
    vs_path.write_text(vs_path.read_text().replace('"Left"', '"Left side"'))
    assert main(["--check", "--dir", str(package_dir)]) == 1
    out = capsys.readouterr().out
    assert "missing: CodeSystem-ivclms-side.json" in out
    assert "differs: ValueSet-ivclms-side-vs.json" in out


def test_check_sees_a_resource_file_added_by_someone_else(package_dir):
    shutil.copy(package_dir / "CodeSystem-ivclms-side.json", package_dir / "CodeSystem-other-copy.json")
    assert check(package_dir) == ["differs: .index.json"]


def test_a_hand_written_file_at_a_generated_name_is_never_overwritten(package_dir):
    path = package_dir / "CodeSystem-ivclms-side.json"
    resource = {**json.loads(path.read_text()), "description": "written by hand"}
    path.write_text(json.dumps(resource))
    assert check(package_dir) == [
        "differs: CodeSystem-ivclms-side.json",
        "hand-written, not generated: CodeSystem-ivclms-side.json",
    ]
    with pytest.raises(package_build.BuildError, match=r"CodeSystem-ivclms-side\.json"):
        build(package_dir)
    assert json.loads(path.read_text())["description"] == "written by hand"


def test_every_generated_resource_says_it_is_generated():
    for name, resource in _resources().items():
        if package_build.is_own(name):
            assert package_build.is_generated(name, resource), name
