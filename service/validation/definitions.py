"""The conformance resources the validator reads: base FHIR R4 (HAPI's jar) and our package (profiles/).

Base R4 comes from HAPI's published ``hapi-fhir-validation-resources-r4`` jar (placed by
``python -m service.validation.fetch``), the same artifact the HAPI test server validates with. Its
XML is converted once (a few seconds) and kept as JSON beside the jar, keyed by the jar's sha1, so a
process start reads it in well under a second. Our package is read from ``profiles/*.json`` as is.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from service.validation import fhirxml
from service.validation.fetch import DEFAULT_DIR, jar_path
from service.validation.newer import Newer
from service.validation.newer import load as load_newer

ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = ROOT / "profiles"
# Bump when the converted form changes, so an old cache is not read.
BASE_FORMAT = "2"
_MODEL = "org/hl7/fhir/r4/model/"
_SEARCH_PARAMETERS = "sp/search-parameters.json"
_BASE_FILES = (
    "profile/profiles-types.xml",
    "profile/profiles-resources.xml",
    "extension/extension-definitions.xml",
    "valueset/valuesets.xml",
    "valueset/v3-codesystems.xml",
    "valueset/v2-tables.xml",
)
_KINDS = ("StructureDefinition", "ValueSet", "CodeSystem")
# Parts of the base definitions the validator never reads; dropped to keep the cache small.
_DROP = ("text", "differential", "mapping", "description", "purpose", "copyright", "contact")


class DefinitionsMissing(RuntimeError):
    """The base definitions jar is not in place; the message says which command places it."""


@dataclass
class Definitions:
    """Every StructureDefinition, ValueSet and CodeSystem by canonical URL (version suffix ignored)."""

    structures: dict[str, dict[str, Any]] = field(default_factory=dict)
    value_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    code_systems: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_version: str = ""
    search_parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    """SearchParameters given besides base R4 (a test case's supporting files); base R4's own are read
    on first use by ``crosscheck.search_parameter``."""
    questionnaires: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Questionnaires known to the validator, for the QuestionnaireResponses that answer them."""
    measures: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Measures known to the validator, for the MeasureReports that report on them."""
    base_dir: Path | None = None
    """Where base R4's jar lives (for resources read on demand, e.g. its search parameters)."""
    newer: Newer = field(default_factory=Newer)
    """What THO and the extensions package add to base R4 (``newer.json``); empty unless loaded."""

    def add(self, resource: dict[str, Any]) -> None:
        table = {
            "StructureDefinition": self.structures,
            "ValueSet": self.value_sets,
            "CodeSystem": self.code_systems,
            "SearchParameter": self.search_parameters,
            "Questionnaire": self.questionnaires,
            "Measure": self.measures,
        }.get(resource.get("resourceType", ""))
        if table is not None and "url" in resource:
            table[resource["url"]] = resource

    def structure(self, url: str) -> dict[str, Any] | None:
        return self.structures.get(url.split("|", 1)[0])

    def value_set(self, url: str) -> dict[str, Any] | None:
        return self.value_sets.get(url.split("|", 1)[0])

    def code_system(self, url: str) -> dict[str, Any] | None:
        return self.code_systems.get(url.split("|", 1)[0])


def package_files(profiles_dir: Path = PROFILES_DIR) -> list[Path]:
    """The package's own resources: ``profiles/*.json`` (not examples, not the NPM manifests)."""
    return sorted(p for p in profiles_dir.glob("*.json") if p.name != "package.json")


def package_resources(profiles_dir: Path = PROFILES_DIR) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in package_files(profiles_dir):
        data = orjson.loads(path.read_bytes())
        if isinstance(data, dict) and data.get("resourceType") in _KINDS:
            out.append(data)
    return out


def base_jar(directory: Path = DEFAULT_DIR) -> Path:
    jar = jar_path(directory)
    if not jar.is_file():
        raise DefinitionsMissing(
            f"{jar} is missing: run scripts/r4-definitions (python -m service.validation.fetch) first"
        )
    return jar


def file_sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def load_base(directory: Path = DEFAULT_DIR) -> tuple[list[dict[str, Any]], str]:
    """Base R4 resources as JSON and the jar's sha1 (the base version the caches are keyed by)."""
    jar = base_jar(directory)
    sha1 = file_sha1(jar)
    cache = directory / "cache" / f"base-{sha1[:16]}-v{BASE_FORMAT}.json"
    if cache.is_file():
        resources: list[dict[str, Any]] = orjson.loads(cache.read_bytes())
        return resources, sha1
    resources = list(convert(jar))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".part")
    tmp.write_bytes(orjson.dumps(resources))
    tmp.replace(cache)
    return resources, sha1


def convert(jar: Path) -> Iterable[dict[str, Any]]:
    """Every StructureDefinition, ValueSet and CodeSystem of the jar as FHIR JSON."""
    with zipfile.ZipFile(jar) as z:
        trees = []
        for name in _BASE_FILES:
            with z.open(_MODEL + name) as f:
                trees.append(fhirxml.read(f))
    shaper = fhirxml.Shaper(
        r for t in trees[:2] for rt, r in fhirxml.entries(t) if rt == "StructureDefinition"
    )
    for tree in trees:
        for rtype, raw in fhirxml.entries(tree):
            if rtype in _KINDS:
                resource = shaper.resource(rtype, raw)
                for key in _DROP:
                    resource.pop(key, None)
                yield resource


def load(profiles_dir: Path = PROFILES_DIR, base_dir: Path = DEFAULT_DIR) -> Definitions:
    """Base R4 plus the package; a package resource replaces a base one with the same URL."""
    base, sha1 = load_base(base_dir)
    defs = Definitions(base_version=sha1, base_dir=base_dir, newer=load_newer())
    for resource in base:
        defs.add(resource)
    for resource in package_resources(profiles_dir):
        defs.add(resource)
    return defs


def base_search_parameters(directory: Path = DEFAULT_DIR) -> dict[str, dict[str, Any]]:
    """Base R4's SearchParameters by canonical URL, from the jar's ``search-parameters.json`` (the
    same definitions the reference validator loads). Read on demand: only CapabilityStatement and
    SearchParameter resources need them."""
    jar = base_jar(directory)
    with zipfile.ZipFile(jar) as z:
        bundle = orjson.loads(z.read(_MODEL + _SEARCH_PARAMETERS))
    out: dict[str, dict[str, Any]] = {}
    for entry in bundle.get("entry", []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and isinstance(resource.get("url"), str):
            resource.pop("text", None)
            out[resource["url"]] = resource
    return out
