"""Generate the terminology half of the FHIR package in ``profiles/`` from ``mappings/codes.yaml``.

Writes, for every code table: a CodeSystem (not for tables whose values are FHIR codes themselves), a
ValueSet that admits both the project codes and the table's verified standard codes, and a ConceptMap
from the project codes to the standard codes when the table has any; plus ``package.json`` and the NPM
``.index.json`` of every resource file in the folder (including files this generator does not own).

Output is deterministic (fixed key order, 2-space indent, trailing newline). The generator owns the
file names ``CodeSystem-ivclms-*.json``, ``ValueSet-ivclms-*-vs.json`` and
``ConceptMap-ivclms-*-to-standard.json``: stale ones are removed, every other file is left alone.

    python -m service.package_build            # write profiles/
    python -m service.package_build --check    # exit 1 and list differences if profiles/ is stale
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service import __version__, codes, package_examples, package_model, package_profiles
from service.codes import ABSENT_REASONS, CANONICAL, DATA_ABSENT_REASON, Table
from service.mapping.spec import spec

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"
PREFIX = "ivclms"
VERSION = __version__
"""The package's and every resource's ``version``: the project's (pyproject.toml), bumped with it."""
FHIR_VERSION = "4.0.1"
PUBLISHER = "IVC-LMS project"
SOURCE_FILE = "mappings/"
# Ends the description of every generated resource; a file carrying it is the generator's to replace or
# remove, a file without it is never touched (even a hand-written ValueSet-ivclms-*-vs.json).
GENERATED_NOTE = f"Generated from {SOURCE_FILE} by service/package_build.py: do not edit by hand."

PACKAGE_MANIFEST = "package.json"
PACKAGE_INDEX = ".index.json"
# File names the generator writes; it owns such a file only when it also carries GENERATED_NOTE.
OWN_PATTERNS = (
    f"CodeSystem-{PREFIX}-*.json",
    f"ValueSet-{PREFIX}-*-vs.json",
    f"ConceptMap-{PREFIX}-*-to-standard.json",
    f"StructureDefinition-{PREFIX}-*.json",
    f"ConceptMap-{PREFIX}-case-to-fhir.json",
    "StructureDefinition-IvcLmsCase.json",  # the logical model: its id is its type name
)
# A table with ``fhir_code: true`` holds the codes of a FHIR code system; which one is named by the
# table's ``system:`` alias in codes.yaml, by default this alias (administrative gender).
DEFAULT_FHIR_CODE_SYSTEM_ALIAS = "AG"
DEFAULT_EQUIVALENCE = "equivalent"
# ConceptMapEquivalence (R4) codes a standard entry may name with ``equivalence:``.
EQUIVALENCES = frozenset(
    {"relatedto", "equivalent", "equal", "wider", "subsumes", "narrower", "specializes", "inexact"}
)


class BuildError(Exception):
    """The code tables cannot be turned into a package; the message names the offending entry."""


@dataclass(frozen=True)
class StandardInfo:
    """What codes.yaml says about a standard coding beyond the coding itself."""

    source: str
    equivalence: str


# -- reading the data ---------------------------------------------------------------------------------


def _raw_tables() -> dict[str, dict[str, Any]]:
    with (codes.MAPPINGS_DIR / "codes.yaml").open(encoding="utf-8") as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    raw: dict[str, dict[str, Any]] = data["tables"]
    return raw


def _standard_info(raw: dict[str, Any], table: str, key: str) -> StandardInfo:
    spec = raw[table]["values"]
    std = spec[_yaml_key(spec, key)]["standard"]
    source = std.get("source")
    if not source:
        raise BuildError(f"codes.yaml: tables.{table}.values.{key}.standard has no `source`")
    equivalence = std.get("equivalence", DEFAULT_EQUIVALENCE)
    if equivalence not in EQUIVALENCES:
        raise BuildError(f"codes.yaml: tables.{table}.values.{key}.standard.equivalence {equivalence!r}")
    return StandardInfo(str(source), str(equivalence))


def _yaml_key(spec: dict[Any, Any], key: str) -> Any:
    """The key as YAML parsed it (an unquoted ``1`` is an int; codes.py turns every key into a str)."""
    for k in spec:
        if str(k) == key:
            return k
    raise BuildError(f"codes.yaml: value {key!r} not found")


def _fhir_code_system(raw: dict[str, Any], table: Table) -> str:
    alias = raw[table.name].get("system", DEFAULT_FHIR_CODE_SYSTEM_ALIAS)
    try:
        return codes.systems()[alias]
    except KeyError:
        raise BuildError(f"codes.yaml: tables.{table.name}.system {alias!r} is not under `systems`") from None


# -- names ----------------------------------------------------------------------------------------------


def _pascal(*parts: str) -> str:
    words = [w for part in parts for w in part.replace("_", "-").split("-") if w]
    return "".join(w[:1].upper() + w[1:] for w in words)


def codesystem_id(table: Table) -> str:
    return f"{PREFIX}-{table.name}"


def valueset_id(table: Table) -> str:
    return f"{PREFIX}-{table.name}-vs"


def conceptmap_id(table: Table) -> str:
    return f"{PREFIX}-{table.name}-to-standard"


def canonical_url(resource_type: str, resource_id: str) -> str:
    return f"{CANONICAL}/{resource_type}/{resource_id}"


def filename(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}-{resource['id']}.json"


# -- resources ------------------------------------------------------------------------------------------


def _header(resource_type: str, resource_id: str, name: str, title: str, description: str) -> dict[str, Any]:
    url = canonical_url(resource_type, resource_id)
    return {
        "resourceType": resource_type,
        "id": resource_id,
        "url": url,
        "version": VERSION,
        "name": name,
        "title": title,
        "status": "active",
        "experimental": False,
        "publisher": PUBLISHER,
        "description": f"{description} {GENERATED_NOTE}",
    }


def _properties(table: Table) -> list[str]:
    """Extra per-value fields (e.g. ``unit``) that become CodeSystem properties; only strings."""
    names: list[str] = []
    for value in table.values.values():
        for prop, val in value.extra.items():
            if not isinstance(val, str):
                raise BuildError(f"codes.yaml: tables.{table.name}.values.{value.key}.{prop} is not a string")
            if prop not in names:
                names.append(prop)
    return names


def codesystem(table: Table) -> dict[str, Any]:
    rid = codesystem_id(table)
    if canonical_url("CodeSystem", rid) != table.system:
        raise BuildError(f"table {table.name}: CodeSystem url {table.system} does not follow the naming")
    resource = _header(
        "CodeSystem",
        rid,
        _pascal(PREFIX, table.name),
        f"IVC-LMS {table.title}",
        f"Project codes of the IVC-LMS table '{table.title}' (`{table.name}` in mappings/codes.yaml). "
        "Values with a verified standard code are mapped in the ConceptMap "
        f"{canonical_url('ConceptMap', conceptmap_id(table))} when there is one.",
    )
    props = _properties(table)
    resource.update({"caseSensitive": True, "content": "complete", "count": len(table.values)})
    if props:
        resource["property"] = [
            {"code": p, "description": f"`{p}` of the value in mappings/codes.yaml", "type": "string"}
            for p in props
        ]
    concepts: list[dict[str, Any]] = []
    for value in table.values.values():
        concept: dict[str, Any] = {"code": value.key, "display": value.display}
        if props and value.extra:
            concept["property"] = [
                {"code": p, "valueString": value.extra[p]} for p in props if p in value.extra
            ]
        concepts.append(concept)
    resource["concept"] = concepts
    return resource


def _standard_includes(table: Table) -> list[dict[str, Any]]:
    """One include per standard system (in order of first use), listing the table's verified codes."""
    by_system: dict[str, dict[str, str]] = {}
    for value in table.values.values():
        if value.standard is None:
            continue
        concepts = by_system.setdefault(value.standard.system, {})
        known = concepts.get(value.standard.code)
        if known is not None and known != value.standard.display:
            raise BuildError(
                f"table {table.name}: {value.standard.system}|{value.standard.code} has two displays"
            )
        concepts[value.standard.code] = value.standard.display
    return [
        {"system": system, "concept": [{"code": c, "display": d} for c, d in concepts.items()]}
        for system, concepts in by_system.items()
    ]


def valueset(table: Table, raw: dict[str, Any]) -> dict[str, Any]:
    rid = valueset_id(table)
    if canonical_url("ValueSet", rid) != table.valueset:
        raise BuildError(f"table {table.name}: ValueSet url {table.valueset} does not follow the naming")
    if table.fhir_code:
        system = _fhir_code_system(raw, table)
        description = (
            f"Values of the IVC-LMS table '{table.title}' (`{table.name}` in codes.yaml), which are the "
            f"codes of {system} itself."
        )
        includes = [
            {
                "system": system,
                "concept": [{"code": v.key, "display": v.display} for v in table.values.values()],
            }
        ]
    else:
        description = (
            f"Values of the IVC-LMS table '{table.title}' (`{table.name}` in codes.yaml): every project "
            f"code of {table.system}, plus the verified standard code of each value that has one, so that "
            "a CodeableConcept carrying either coding is in the value set."
        )
        includes = [
            {
                "system": table.system,
                "concept": [{"code": v.key, "display": v.display} for v in table.values.values()],
            },
            *_standard_includes(table),
        ]
        if table.absent:
            # the data-absent reasons the table accepts (codes.yaml `absent:`), so that a required
            # binding still admits "unknown" / "not applicable" written as a CodeableConcept
            reasons = [ABSENT_REASONS[key] for key in table.absent]
            includes.append(
                {"system": DATA_ABSENT_REASON, "concept": [{"code": c, "display": d} for c, d in reasons]}
            )
    resource = _header(
        "ValueSet", rid, _pascal(PREFIX, table.name) + "VS", f"IVC-LMS {table.title} value set", description
    )
    resource["compose"] = {"include": includes}
    return resource


def conceptmap(table: Table, raw: dict[str, Any]) -> dict[str, Any] | None:
    """Project code -> verified standard code; ``None`` when the table has no standard coding."""
    if table.fhir_code:
        return None
    groups: dict[str, list[dict[str, Any]]] = {}
    for value in table.values.values():
        if value.standard is None:
            continue
        info = _standard_info(raw, table.name, value.key)
        groups.setdefault(value.standard.system, []).append(
            {
                "code": value.key,
                "display": value.display,
                "target": [
                    {
                        "code": value.standard.code,
                        "display": value.standard.display,
                        "equivalence": info.equivalence,
                        "comment": f"Verified in: {info.source}.",
                    }
                ],
            }
        )
    if not groups:
        return None
    rid = conceptmap_id(table)
    systems = ", ".join(groups)
    resource = _header(
        "ConceptMap",
        rid,
        _pascal(PREFIX, table.name, "to-standard"),
        f"IVC-LMS {table.title} to standard codes",
        f"Maps the project codes of the IVC-LMS table '{table.title}' ({table.system}) to verified "
        f"standard codes ({systems}). Only values with a verified standard code are mapped; each "
        f"target's comment names where it was verified (`source` in {SOURCE_FILE}).",
    )
    resource["sourceCanonical"] = table.valueset
    resource["group"] = [
        {"source": table.system, "target": system, "element": elements} for system, elements in groups.items()
    ]
    return resource


def package_manifest() -> dict[str, Any]:
    return {
        "name": f"{PREFIX}.fhir",
        "version": VERSION,
        "fhirVersions": [FHIR_VERSION],
        "type": "fhir.ig",
        "canonical": CANONICAL,
        "url": CANONICAL,
        "title": "IVC-LMS FHIR profiles",
        "description": (
            "FHIR R4 profiles and terminology for leiomyosarcoma of the inferior vena cava (IVC-LMS): "
            "project CodeSystems, ValueSets admitting project and verified standard codes, and "
            "ConceptMaps to the standard codes, generated from mappings/codes.yaml."
        ),
        "dependencies": {"hl7.fhir.r4.core": FHIR_VERSION},
        "license": "Apache-2.0",
        "author": PUBLISHER,
    }


def generated_resources() -> list[dict[str, Any]]:
    """Every resource this generator owns: terminology in table order, then the StructureDefinitions."""
    raw = _raw_tables()
    out: list[dict[str, Any]] = []
    out.extend(mapping_codesystems())
    for table in codes.tables().values():
        if not table.fhir_code:
            out.append(codesystem(table))
        out.append(valueset(table, raw))
        cm = conceptmap(table, raw)
        if cm is not None:
            out.append(cm)
    out.extend(package_profiles.structure_definitions(spec(), _header))
    out.append(package_model.logical_model(_header))
    out.append(package_model.conceptmap(_header))
    return out


def mapping_codesystems() -> list[dict[str, Any]]:
    """The project CodeSystems whose codes the mapping fixes (``codes:`` of case-fhir.yaml, e.g. OBS)."""
    by_system: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, c in spec().codes.items():
        if c["system"].startswith(f"{CANONICAL}/CodeSystem/"):
            by_system.setdefault(c["system"], []).append((name, c))
    out = []
    for system, entries in sorted(by_system.items()):
        rid = system.rsplit("/", 1)[-1]
        title = f"IVC-LMS {rid.removeprefix(PREFIX + '-')} codes"
        resource = _header(
            "CodeSystem",
            rid,
            _pascal(rid),
            title,
            f"Project codes for {rid.removeprefix(PREFIX + '-')} concepts with no verified standard code,"
            " fixed by the profiles (mappings/case-fhir.yaml codes:).",
        )
        resource.update(
            {
                "caseSensitive": True,
                "content": "complete",
                "count": len(entries),
                "concept": [{"code": str(c["code"]), "display": c["display"]} for _, c in entries],
            }
        )
        out.append(resource)
    return out


# -- files ----------------------------------------------------------------------------------------------


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def is_own(name: str) -> bool:
    """Whether the file name is one the generator writes."""
    return any(fnmatch.fnmatchcase(name, p) for p in OWN_PATTERNS)


def is_generated(name: str, resource: dict[str, Any]) -> bool:
    """Whether a file was written by this generator (its name and its description say so)."""
    return is_own(name) and str(resource.get("description", "")).endswith(GENERATED_NOTE)


def generated_files() -> dict[str, str]:
    """File name -> text of every generated resource file (not the manifest or the index)."""
    files: dict[str, str] = {}
    for resource in generated_resources():
        name = filename(resource)
        if not is_own(name):
            raise BuildError(f"{name}: a generated file name must match one of {OWN_PATTERNS}")
        if name in files:
            raise BuildError(f"{name}: generated twice")
        files[name] = dumps(resource)
    return files


def _is_resource_file(name: str) -> bool:
    return name.endswith(".json") and name not in (PACKAGE_MANIFEST, PACKAGE_INDEX)


def scan(directory: Path) -> dict[str, dict[str, Any]]:
    """File name -> parsed resource of every resource file at the top of the package folder."""
    found: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.json")):
        if not (path.is_file() and _is_resource_file(path.name)):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise BuildError(f"{path}: not JSON ({exc})") from exc
        if not isinstance(data, dict) or "resourceType" not in data:
            raise BuildError(f"{path}: not a FHIR resource")
        found[path.name] = data
    return found


def index(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The NPM package ``.index.json`` (index-version 1) for these resource files."""
    entries: list[dict[str, Any]] = []
    for name in sorted(resources):
        res = resources[name]
        entry: dict[str, Any] = {"filename": name, "resourceType": res["resourceType"]}
        for key in ("id", "url", "version", "kind", "type", "supplements", "content"):
            if isinstance(res.get(key), str):
                entry[key] = res[key]
        entries.append(entry)
    return {"index-version": 1, "files": entries}


def expected_files(directory: Path) -> dict[str, str]:
    """Every file the generator would leave in ``directory``: generated ones, manifest and index."""
    generated = generated_files()
    resources = {n: r for n, r in scan(directory).items() if not is_generated(n, r)}
    resources.update({name: json.loads(text) for name, text in generated.items()})
    return {
        **generated,
        PACKAGE_MANIFEST: dumps(package_manifest()),
        PACKAGE_INDEX: dumps(index(resources)),
    }


def stale_files(directory: Path, expected: dict[str, str]) -> list[str]:
    """Files the generator wrote earlier that it would no longer write (a table was removed)."""
    return sorted(n for n, r in scan(directory).items() if is_generated(n, r) and n not in expected)


def _foreign(directory: Path, generated: dict[str, str]) -> list[str]:
    """Hand-written files at a name the generator wants to write: never overwritten."""
    existing = scan(directory)
    return sorted(n for n in generated if n in existing and not is_generated(n, existing[n]))


def example_files() -> dict[str, str]:
    """File name -> text of everything in ``example/``: the folder belongs to the generator entirely."""
    resources = {package_examples.example_filename(r): r for r in package_examples.example_resources()}
    files = {name: dumps(resource) for name, resource in resources.items()}
    files[PACKAGE_INDEX] = dumps(index(resources))
    return files


def _check_examples(directory: Path) -> list[str]:
    folder = directory / package_examples.EXAMPLE_DIR
    expected = example_files()
    problems: list[str] = []
    for name, text in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"missing: {folder.name}/{name}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"differs: {folder.name}/{name}")
    if folder.is_dir():
        problems.extend(
            f"stale: {folder.name}/{p.name}" for p in sorted(folder.iterdir()) if p.name not in expected
        )
    return problems


def _build_examples(directory: Path) -> list[str]:
    folder = directory / package_examples.EXAMPLE_DIR
    folder.mkdir(exist_ok=True)
    expected = example_files()
    changed: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name not in expected:
            path.unlink()
            changed.append(f"removed: {folder.name}/{path.name}")
    for name, text in sorted(expected.items()):
        changed.extend(f"{line} ({folder.name}/)" for line in _write(folder / name, text))
    return changed


def check(directory: Path = PROFILES_DIR) -> list[str]:
    """Differences between ``directory`` and what the generator would write; empty when up to date."""
    expected = expected_files(directory)
    problems: list[str] = _check_examples(directory)
    for name, text in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"missing: {name}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"differs: {name}")
    problems.extend(f"stale: {name}" for name in stale_files(directory, expected))
    problems.extend(f"hand-written, not generated: {name}" for name in _foreign(directory, expected))
    return problems


def build(directory: Path = PROFILES_DIR) -> list[str]:
    """Write the package terminology into ``directory``; returns the names written or removed."""
    directory.mkdir(parents=True, exist_ok=True)
    generated = generated_files()
    foreign = _foreign(directory, generated)
    if foreign:
        raise BuildError(f"refusing to overwrite files that lack the generator's note: {', '.join(foreign)}")
    changed: list[str] = []
    for name in stale_files(directory, generated):
        (directory / name).unlink()
        changed.append(f"removed: {name}")
    files = {**generated, PACKAGE_MANIFEST: dumps(package_manifest())}
    for name, text in sorted(files.items()):
        changed.extend(_write(directory / name, text))
    # The index covers every resource file now in the folder, including ones others wrote.
    changed.extend(_write(directory / PACKAGE_INDEX, dumps(index(scan(directory)))))
    changed.extend(_build_examples(directory))
    return changed


def _write(path: Path, text: str) -> list[str]:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return []
    path.write_text(text, encoding="utf-8")
    return [f"wrote: {path.name}"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.package_build", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--check", action="store_true", help="exit 1 and list differences if out of date")
    parser.add_argument("--dir", type=Path, default=PROFILES_DIR, help="package folder (default: profiles/)")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check(args.dir)
            for line in problems:
                print(line)
            if problems:
                print(f"{args.dir} is not up to date: run python -m service.package_build", file=sys.stderr)
                return 1
            return 0
        for line in build(args.dir):
            print(line)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
