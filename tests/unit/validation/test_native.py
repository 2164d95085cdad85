"""The Python Bundle invariants answer exactly what fhirpathpy answers on the same FHIRPath."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.mapping.forward import case_to_bundle
from service.model import validate_case
from service.validation import Validator
from service.validation.fhirpath import Invariants
from service.validation.native import CHECKS, TYPE_PATHS, native_check
from tests.contract.corpus import corpus

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-*.json"))
BUNDLE_KEYS = {"bdl-5", "bdl-8"}  # on Bundle.entry; the others on Bundle
TYPES = (None, "transaction", "batch", "history", "searchset", "collection", "document", "message",
         "transaction-response", "batch-response")  # fmt: skip


def mapped(path: Path) -> dict[str, Any]:
    return case_to_bundle(validate_case(json.loads(path.read_text())), now="2026-01-01T00:00:00Z")


def _set(bundle: dict[str, Any], key: str, value: Any) -> None:
    bundle[key] = value


def _each(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(bundle: dict[str, Any]) -> None:
        for entry in bundle["entry"]:
            if value is None:
                entry.pop(name, None)
            else:
                entry[name] = copy.deepcopy(value)

    return change


def _first(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    return lambda bundle: change(bundle["entry"][0])


def _versions(*versions: str) -> Callable[[dict[str, Any]], None]:
    def change(bundle: dict[str, Any]) -> None:
        bundle["entry"][1]["fullUrl"] = bundle["entry"][0]["fullUrl"]
        for entry, version in zip(bundle["entry"], versions, strict=False):
            entry["resource"].setdefault("meta", {})["versionId"] = version

    return change


VARIANTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "as mapped": lambda b: None,
    "no request": _each("request", None),
    "responses": _each("response", {"status": "201 Created"}),
    "search on one": _first(lambda e: _set(e, "search", {"mode": "match"})),
    "total": lambda b: _set(b, "total", 3),
    "total zero": lambda b: _set(b, "total", 0),
    "same fullUrl": _versions(),
    "same fullUrl, other versions": _versions("1", "2"),
    "same fullUrl, same versions": _versions("1", "1"),
    "fullUrl without one": lambda b: b["entry"][2].pop("fullUrl"),
    "history fullUrl": _first(lambda e: _set(e, "fullUrl", e["fullUrl"] + "/_history/1")),
    "bare entry": lambda b: b["entry"].append({"fullUrl": "urn:uuid:00000000-0000-0000-0000-000000000000"}),
    "empty entry": lambda b: b["entry"].append({}),
    "no entries": lambda b: b.pop("entry"),
    "empty entries": lambda b: _set(b, "entry", []),
    "composition first": _first(lambda e: _set(e, "resource", {"resourceType": "Composition", "id": "c"})),
    "header first": _first(lambda e: _set(e, "resource", {"resourceType": "MessageHeader", "id": "m"})),
    "first without resource": _first(lambda e: e.pop("resource")),
    "identifier": lambda b: _set(b, "identifier", {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1"}),
    "identifier without system": lambda b: _set(b, "identifier", {"value": "x"}),
    "timestamp": lambda b: _set(b, "timestamp", "2026-01-01T00:00:00Z"),
    "timestamp extension only": lambda b: _set(
        b, "_timestamp", {"extension": [{"url": "u", "valueCode": "x"}]}
    ),
}


def cases() -> Iterator[tuple[str, dict[str, Any]]]:
    small = mapped(EXAMPLES[0])
    small["entry"] = small["entry"][:3]
    for kind in TYPES:
        for name, change in VARIANTS.items():
            bundle = copy.deepcopy(small)
            if kind is None:
                bundle.pop("type")
            else:
                bundle["type"] = kind
            change(bundle)
            yield f"{kind}: {name}", bundle
    for path in EXAMPLES:
        yield path.stem, mapped(path)


CASES = list(cases())
BUNDLE_CHECKS = {k: v for k, v in CHECKS.items() if k[0].startswith("bdl-")}


@pytest.fixture(scope="module")
def evaluator() -> Invariants:
    return Invariants()


EXT1 = next(k for k in CHECKS if k[0] == "ext-1")
EXT_KEYS = ("extension", "modifierExtension")


def _extensions(data: Any) -> Iterator[dict[str, Any]]:
    """Every Extension in ``data``, nested ones included (under ``extension``/``modifierExtension``)."""
    if isinstance(data, list):
        for item in data:
            yield from _extensions(item)
    elif isinstance(data, dict):
        for key, value in data.items():
            if key in EXT_KEYS and isinstance(value, list):
                yield from (v for v in value if isinstance(v, dict))
            yield from _extensions(value)


def _extension_mutants(ext: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Shapes that break ext-1 (both or neither of value and sub-extensions) and the edge shapes the
    Python form must either answer as fhirpathpy does or refuse (None)."""
    values = [k for k in ext if k.startswith("value")]
    bare = {k: v for k, v in ext.items() if k not in values and k != "extension"}
    sub = [{"url": "a", "valueString": "x"}]
    yield {**bare}  # neither
    yield {**bare, "extension": sub, "valueString": "x"}  # both
    yield {**ext, "extension": sub}
    yield {**bare, "extension": sub}
    yield {**bare, "valueCoding": {"code": "c"}}
    yield {**bare, "valueFoo": "x"}  # not a type of Extension.value[x]: fhirpathpy does not see it
    yield {**bare, "value": "x"}
    yield {**bare, "extension": sub, "valueFoo": "x"}
    yield {**bare, "valueString": None}
    yield {**bare, "valueString": None, "extension": sub}
    yield {**bare, "valueString": []}
    yield {**bare, "valueString": ["x"], "extension": sub}
    yield {**bare, "_valueString": {"extension": sub}}
    yield {**bare, "extension": []}
    yield {**bare, "extension": [], "valueString": "x"}
    yield {**bare, "extension": {"url": "a", "valueString": "x"}}
    yield {**bare, "extension": [None]}
    yield {**bare, "extension": sub, "_extension": [{}]}
    yield {**bare, "valueBoolean": False}
    yield {**bare, "valueInteger": 0, "extension": sub}
    yield {**bare, "valueString": "", "valueCode": "x"}


def extension_cases() -> list[dict[str, Any]]:
    found = [e for case in corpus() for e in _extensions(case.resource)]
    found += [e for path in EXAMPLES for e in _extensions(mapped(path))]
    distinct = list({json.dumps(e, sort_keys=True): e for e in found}.values())
    return distinct + [m for e in distinct[:: max(1, len(distinct) // 40)] for m in _extension_mutants(e)]


EXTENSIONS = extension_cases()
CORPUS_EXTENSIONS = {json.dumps(e, sort_keys=True) for c in corpus() for e in _extensions(c.resource)}


def test_ext1_python_and_fhirpath_agree(evaluator: Invariants) -> None:
    """ext-1 on every distinct extension of the corpus and the mapped examples, and mutants of them:
    where the Python answers, fhirpathpy (on a node of type Extension) answers the same."""
    key, expression = EXT1
    disagree, answered, refused = [], {True: 0, False: 0}, 0
    for ext in EXTENSIONS:
        ours = native_check(key, expression, ext, "Extension")
        theirs = evaluator.holds(expression, ext, "Extension", {"resourceType": "Basic"})
        if ours is None:
            refused += 1
            # the corpus' own extensions are all plain shapes: the Python answers every one
            assert json.dumps(ext, sort_keys=True) not in CORPUS_EXTENSIONS, ext
            continue
        answered[ours] += 1
        if ours != theirs:
            disagree.append((ext, ours, theirs))
    assert not disagree, disagree
    assert answered[True] > 100 and answered[False] > 20 and refused > 0, (answered, refused)


def test_ext1_python_form_only_on_extensions() -> None:
    """On another type ``value`` is not the choice value[x]: the Python form refuses (fhirpathpy runs)."""
    key, expression = EXT1
    assert TYPE_PATHS[EXT1] == "Extension"
    assert native_check(key, expression, {"url": "u"}, "Extension") is False
    assert native_check(key, expression, {"url": "u"}, "Element") is None
    assert native_check(key, expression, {"url": "u"}) is None


def test_ext1_python_form_is_of_the_loaded_definition() -> None:
    extension = Validator.load().defs.structure("http://hl7.org/fhir/StructureDefinition/Extension")
    assert extension is not None
    loaded = {
        (c["key"], c["expression"])
        for element in extension["snapshot"]["element"]
        for c in element.get("constraint", [])
        if c["key"] == "ext-1"
    }
    assert loaded == {EXT1}


@pytest.mark.parametrize(("name", "bundle"), CASES, ids=[c[0] for c in CASES])
def test_python_and_fhirpath_agree(name: str, bundle: dict[str, Any], evaluator: Invariants) -> None:
    disagree = []
    for (key, expression), _check in BUNDLE_CHECKS.items():
        nodes = (
            [(e, "Bundle.entry") for e in bundle.get("entry", [])]
            if key in BUNDLE_KEYS
            else [(bundle, "Bundle")]
        )
        for node, type_path in nodes:
            ours = native_check(key, expression, node)
            assert ours is not None, (key, name)  # every shape here is one the Python reads
            theirs = evaluator.holds(expression, node, type_path, bundle)
            assert theirs is not None, f"fhirpathpy cannot evaluate {key}: {evaluator.unsupported}"
            if ours != theirs:
                disagree.append((key, ours, theirs))
    assert not disagree, disagree


def test_the_variants_break_every_rule() -> None:
    """The comparison above sees each rule both held and broken, so agreement is not vacuous."""
    seen: dict[str, set[bool]] = {key: set() for key, _ in BUNDLE_CHECKS}
    for _name, bundle in CASES:
        for key, expression in BUNDLE_CHECKS:
            nodes = bundle.get("entry", []) if key in BUNDLE_KEYS else [bundle]
            for node in nodes:
                seen[key].add(bool(native_check(key, expression, node)))
    assert {key: found for key, found in seen.items() if found != {True, False}} == {}


def test_the_python_forms_are_of_the_loaded_definitions_expressions() -> None:
    """A definition whose expression text changed falls back to fhirpathpy; here none has."""
    bundle = Validator.load().defs.structure("http://hl7.org/fhir/StructureDefinition/Bundle")
    assert bundle is not None
    loaded = {
        (c["key"], c["expression"])
        for element in bundle["snapshot"]["element"]
        for c in element.get("constraint", [])
        if c["key"].startswith("bdl-")
    }
    assert set(BUNDLE_CHECKS) == loaded


def test_the_validator_reports_the_same_issues_either_way() -> None:
    validator = Validator.load()
    for name, bundle in CASES[:: max(1, len(CASES) // 60)]:
        validator.native = True
        fast = validator.validate_bundle(bundle)
        validator.native = False
        slow = validator.validate_bundle(bundle)
        assert fast == slow, name
