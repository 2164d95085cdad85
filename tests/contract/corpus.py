"""Conformance corpus: every resource the examples map to, plus systematic mutations of them.

Deterministic (no randomness): each example case in ``examples/`` is mapped with a fixed ``now``, every
entry resource is a ``valid`` case, and each mutation class below is applied wherever the profile
(read here as plain JSON from ``profiles/``, not through the validator) gives it something to break.
To keep the HAPI run short, a mutation of a given profile element is kept for at most
``PER_PROFILE`` example resources. Each case has a stable name ``<case>/<Type>-<entry>/<class>:<what>``
and, where FHIR's rules make it certain, the verdict and the element (FHIRPath) a validator must report;
HAPI decides the rest in tests/integration/test_validator_agreement.py.

    python -m tests.contract.corpus       # print the case names and a count per class
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from service.case_files import map_case

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-0*.json"))
PROFILES = ROOT / "profiles"
NOW = "2026-01-01T00:00:00Z"
PER_PROFILE = 2
UNKNOWN_EXTENSION = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-not-defined"
# A project extension whose context is Patient, to put where it does not belong.
MISPLACED_EXTENSION = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-age-at-diagnosis"
WRONG_SYSTEM = "http://example.org/fhir/CodeSystem/wrong"
# Valid UCUM units to swap a fixed unit for (the wrong one is still UCUM, so only the pattern breaks).
UCUM_SWAP = {"cm": "mm", "mm": "cm", "mo": "wk", "d": "wk", "Gy": "cGy", "mg": "g", "kg": "g"}


@dataclass(frozen=True)
class Case:
    """One corpus item. ``errors`` is True/False when FHIR's rules decide it, None when only HAPI says;
    ``expression`` is the element a validator must report an error on (for ``errors=True``)."""

    name: str
    kind: str  # "resource" or "bundle"
    resource: dict[str, Any]
    mutation: str
    errors: bool | None
    expression: str | None = None

    @property
    def profile(self) -> str | None:
        if self.kind != "resource":
            return None
        profiles = self.resource.get("meta", {}).get("profile", [])
        return str(profiles[0]) if profiles else None


@cache
def bundles() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(case name like ``ivclms-001``, transaction Bundle) of every example."""
    out = []
    for path in EXAMPLES:
        name = "-".join(path.stem.split("-")[:2])
        out.append((name, map_case(json.loads(path.read_text()), now=NOW)))
    return tuple(out)


@cache
def _profiles() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(PROFILES.glob("StructureDefinition-*.json")):
        sd = json.loads(path.read_text())
        out[sd["url"]] = sd
    return out


def _diff(url: str) -> list[dict[str, Any]]:
    sd = _profiles().get(url)
    return sd["differential"]["element"] if sd else []


@cache
def _project_codes() -> dict[str, list[str]]:
    """Codes of every project CodeSystem (to pick a real code that a given ValueSet excludes)."""
    out = {}
    for path in sorted(PROFILES.glob("CodeSystem-*.json")):
        cs = json.loads(path.read_text())
        out[cs["url"]] = [c["code"] for c in cs.get("concept", [])]
    return out


@cache
def _value_set_systems(url: str) -> frozenset[str]:
    for path in PROFILES.glob("ValueSet-*.json"):
        vs = json.loads(path.read_text())
        if vs["url"] == url:
            return frozenset(i.get("system", "") for i in vs.get("compose", {}).get("include", []))
    return frozenset()


def _foreign_coding(valueset: str) -> dict[str, str]:
    """A real project code from a CodeSystem the value set does not include."""
    excluded = _value_set_systems(valueset)
    system = next(s for s, codes in sorted(_project_codes().items()) if s not in excluded and codes)
    return {"system": system, "code": _project_codes()[system][0]}


# ---- mutation classes: each yields (what, mutated resource, errors?, expression) -------------------

Mutant = tuple[str, dict[str, Any], bool | None, str | None]


def _top(eid: str, rtype: str) -> str | None:
    """``Observation.status`` -> ``status``; None for deeper or sliced ids."""
    rest = eid[len(rtype) + 1 :] if eid.startswith(rtype + ".") else ""
    return rest if rest and "." not in rest and ":" not in rest else None


def _present_key(res: dict[str, Any], name: str) -> str | None:
    if name.endswith("[x]"):
        stem = name[:-3]
        return next((k for k in res if k.startswith(stem) and k[len(stem) : len(stem) + 1].isupper()), None)
    return name if name in res else None


def drop(res: dict[str, Any], rtype: str, diff: list[dict[str, Any]]) -> Iterator[Mutant]:
    for el in diff:
        name = _top(el["id"], rtype)
        key = _present_key(res, name) if name and el.get("min", 0) >= 1 else None
        if key:
            m = copy.deepcopy(res)
            del m[key]
            yield key, m, True, f"{rtype}.{name.removesuffix('[x]')}"


def exceed(res: dict[str, Any], rtype: str, diff: list[dict[str, Any]]) -> Iterator[Mutant]:
    """A second copy of a max-1 extension slice; a list where a single value is required."""
    for el in diff:
        if el.get("max") == "1" and el["id"].startswith(f"{rtype}.extension:"):
            url = el["type"][0]["profile"][0]
            index = next((i for i, e in enumerate(res.get("extension", [])) if e.get("url") == url), None)
            if index is not None:
                m = copy.deepcopy(res)
                m["extension"].append(copy.deepcopy(m["extension"][index]))
                yield f"extension:{el['sliceName']}", m, True, f"{rtype}.extension[{len(m['extension']) - 1}]"
    for key in ("status", "gender"):
        if isinstance(res.get(key), str):
            m = copy.deepcopy(res)
            m[key] = [res[key], res[key]]
            yield key, m, True, f"{rtype}.{key}"


def wrong_type(res: dict[str, Any], rtype: str, diff: list[dict[str, Any]]) -> Iterator[Mutant]:
    for el in diff:
        name = _top(el["id"], rtype)
        if name and name.endswith("[x]") and len(el.get("type", [])) == 1:
            key = _present_key(res, name)
            if key:
                m = copy.deepcopy(res)
                del m[key]
                other = "valueBoolean" if key == f"{name[:-3]}String" else f"{name[:-3]}String"
                m[other] = True if other.endswith("Boolean") else "not the right type"
                yield key, m, True, f"{rtype}.{other}"
    if isinstance(res.get("status"), str):
        m = copy.deepcopy(res)
        m["status"] = 1
        yield "status", m, True, f"{rtype}.status"


def _codings(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, list):
        return [c for v in value for c in _codings(v)]
    return value.get("coding", []) if isinstance(value, dict) else []


def pattern(res: dict[str, Any], rtype: str, diff: list[dict[str, Any]]) -> Iterator[Mutant]:
    for el in diff:
        name = _top(el["id"], rtype)
        want = el.get("patternCodeableConcept")
        key = _present_key(res, name) if name and want else None
        if not key:
            continue
        system, code = want["coding"][0]["system"], want["coding"][0]["code"]
        for what, field, new in (("code", "code", "wrong-code"), ("system", "system", WRONG_SYSTEM)):
            m = copy.deepcopy(res)
            for coding in _codings(m[key]):
                if coding.get("system") == system and coding.get("code") == code:
                    coding[field] = new
            yield f"{key}.{what}", m, True, f"{rtype}.{key}"


def binding(res: dict[str, Any], rtype: str, diff: list[dict[str, Any]]) -> Iterator[Mutant]:
    """A real project code from a CodeSystem that the required ValueSet does not include."""
    for el in diff:
        name = _top(el["id"], rtype)
        bound = el.get("binding", {})
        key = _present_key(res, name) if name and bound.get("strength") == "required" else None
        if key and isinstance(res[key], dict) and "coding" in res[key]:
            m = copy.deepcopy(res)
            m[key] = {"coding": [_foreign_coding(bound["valueSet"])]}
            yield key, m, True, f"{rtype}.{key}"
    for i, ext in enumerate(res.get("extension", [])):
        value = ext.get("valueCodeableConcept")
        sd = _profiles().get(ext.get("url", ""))
        if not value or not sd:
            continue
        vel = next((e for e in sd["differential"]["element"] if e["id"] == "Extension.value[x]"), {})
        if vel.get("binding", {}).get("strength") == "required":
            m = copy.deepcopy(res)
            m["extension"][i]["valueCodeableConcept"] = {
                "coding": [_foreign_coding(vel["binding"]["valueSet"])]
            }
            yield f"extension[{i}]", m, True, f"{rtype}.extension[{i}].valueCodeableConcept"


def ucum(res: dict[str, Any], rtype: str, diff: list[dict[str, Any]]) -> Iterator[Mutant]:
    """Another valid UCUM unit where the profile fixes one by patternQuantity."""
    for el in diff:
        unit = el.get("patternQuantity", {}).get("code")
        if not unit or unit not in UCUM_SWAP or not el["id"].endswith("value[x]"):
            continue
        m = copy.deepcopy(res)
        if el["id"] == f"{rtype}.value[x]" and "valueQuantity" in m:
            targets = [(m["valueQuantity"], f"{rtype}.valueQuantity")]
        elif ".component:" in el["id"]:
            slice_name = el["id"].split(":", 1)[1].split(".", 1)[0]
            code_el = next((e for e in diff if e["id"] == f"{rtype}.component:{slice_name}.code"), {})
            want = code_el.get("patternCodeableConcept", {}).get("coding", [{}])[0]
            targets = [
                (c["valueQuantity"], f"{rtype}.component[{i}].valueQuantity")
                for i, c in enumerate(m.get("component", []))
                if "valueQuantity" in c
                and any(x.get("code") == want.get("code") for x in _codings(c.get("code")))
            ][:1]
        else:
            targets = []
        for q, where in targets:
            q["code"] = q["unit"] = UCUM_SWAP[unit]
            yield f"{where.split('.', 1)[1]}", m, True, where


def extension(res: dict[str, Any], rtype: str, diff: list[dict[str, Any]]) -> Iterator[Mutant]:
    """Value missing, value mistyped (per project extension url present); an unknown extension url."""
    seen: set[str] = set()
    for i, ext in enumerate(res.get("extension", [])):
        url = ext.get("url", "")
        value_key = next((k for k in ext if k.startswith("value")), None)
        if url in seen or url not in _profiles() or value_key is None:
            continue
        seen.add(url)
        short = url.rsplit("/", 1)[1].removeprefix("ivclms-")
        m = copy.deepcopy(res)
        del m["extension"][i][value_key]
        yield f"no-value:{short}", m, True, f"{rtype}.extension[{i}]"
        m = copy.deepcopy(res)
        del m["extension"][i][value_key]
        other = "valueBoolean" if value_key == "valueString" else "valueString"
        m["extension"][i][other] = True if other == "valueBoolean" else "mistyped"
        yield f"mistyped:{short}", m, True, f"{rtype}.extension[{i}]"
    m = copy.deepcopy(res)
    m.setdefault("extension", []).append({"url": UNKNOWN_EXTENSION, "valueString": "x"})
    yield "unknown-url", m, False, None
    if rtype != "Patient":
        m = copy.deepcopy(res)
        m.setdefault("extension", []).append({"url": MISPLACED_EXTENSION, "valueInteger": 50})
        yield "wrong-context", m, True, f"{rtype}.extension[{len(m['extension']) - 1}]"


def component(res: dict[str, Any], rtype: str, diff: list[dict[str, Any]]) -> Iterator[Mutant]:
    """Each component slice's component removed in turn (slices are 0..n: HAPI decides)."""
    for i in range(len(res.get("component", []))):
        m = copy.deepcopy(res)
        del m["component"][i]
        if not m["component"]:
            del m["component"]
        yield f"drop-{i}", m, None, None


def reference(res: dict[str, Any], rtype: str, diff: list[dict[str, Any]]) -> Iterator[Mutant]:
    """``subject`` as a literal reference to another type: HAPI checks only references it resolves."""
    if isinstance(res.get("subject"), dict):
        m = copy.deepcopy(res)
        m["subject"] = {"reference": "Device/not-a-patient"}
        yield "subject-literal", m, None, None


def invariant(res: dict[str, Any], rtype: str, diff: list[dict[str, Any]]) -> Iterator[Mutant]:
    """ext-1 (value and sub-extensions), obs-6 (dataAbsentReason with a value), per-1 (end before start)."""
    for i, ext in enumerate(res.get("extension", [])[:1]):
        m = copy.deepcopy(res)
        m["extension"][i]["extension"] = [{"url": UNKNOWN_EXTENSION, "valueString": "x"}]
        if not any(k.startswith("value") for k in ext):
            m["extension"][i]["valueString"] = "x"
        yield "ext-1", m, True, f"{rtype}.extension[{i}]"
    if rtype == "Observation" and any(k.startswith("value") for k in res):
        m = copy.deepcopy(res)
        m["dataAbsentReason"] = {"text": "not known"}
        yield "obs-6", m, True, rtype
    for key, value in res.items():
        if (key.endswith("Period") or key == "period") and isinstance(value, dict):
            m = copy.deepcopy(res)
            m[key] = {"start": "2021-05-02", "end": "2021-05-01"}
            yield f"per-1:{key}", m, True, f"{rtype}.{key}"


def date(res: dict[str, Any], rtype: str, diff: list[dict[str, Any]]) -> Iterator[Mutant]:
    """A date with month 13, and a date in day/month/year order, wherever the resource has a date."""
    for key, value in res.items():
        spots: list[tuple[list[Any], str, str]] = []
        if isinstance(value, str) and _looks_like_date(value):
            spots.append(([key], key, f"{rtype}.{key}"))
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, str) and _looks_like_date(v):
                    spots.append(([key, k], f"{key}.{k}", f"{rtype}.{key}.{k}"))
        for path, what, where in spots[:1]:
            for variant, bad in (("month-13", "2021-13-01"), ("dmy", "01/02/2021")):
                m = copy.deepcopy(res)
                holder = m
                for p in path[:-1]:
                    holder = holder[p]
                holder[path[-1]] = bad
                yield f"{what}:{variant}", m, True, where


def _looks_like_date(text: str) -> bool:
    return (
        len(text) >= 4
        and text[:4].isdigit()
        and (len(text) == 4 or text[4] == "-")
        and text[:2] in ("19", "20")
    )


MUTATIONS: dict[str, Callable[[dict[str, Any], str, list[dict[str, Any]]], Iterator[Mutant]]] = {
    "drop": drop,
    "exceed": exceed,
    "type": wrong_type,
    "pattern": pattern,
    "binding": binding,
    "ucum": ucum,
    "extension": extension,
    "component": component,
    "reference": reference,
    "invariant": invariant,
    "date": date,
}


def resource_cases() -> list[Case]:
    out: list[Case] = []
    kept: Counter[tuple[str, str]] = Counter()
    for case, bundle in bundles():
        for index, entry in enumerate(bundle["entry"]):
            res = entry["resource"]
            rtype = res["resourceType"]
            stem = f"{case}/{rtype}-{index}"
            out.append(Case(f"{stem}/valid", "resource", res, "valid", False))
            profile = res["meta"]["profile"][0]
            diff = _diff(profile)
            for cls, mutate in MUTATIONS.items():
                for what, mutated, errors, expression in mutate(res, rtype, diff):
                    key = (profile, f"{cls}:{what}")
                    if kept[key] >= PER_PROFILE:
                        continue
                    kept[key] += 1
                    out.append(Case(f"{stem}/{cls}:{what}", "resource", mutated, cls, errors, expression))
    return out


def bundle_cases() -> list[Case]:
    """Each example Bundle as is, and with one reference pointed at an entry of the wrong type."""
    out: list[Case] = []
    for case, bundle in bundles():
        out.append(Case(f"{case}/Bundle/valid", "bundle", bundle, "valid", False))
        entries = bundle["entry"]
        for index, entry in enumerate(entries):
            subject = entry["resource"].get("subject")
            if entry["resource"]["resourceType"] == "Observation" and isinstance(subject, dict):
                wrong = next(e["fullUrl"] for e in entries if e["resource"]["resourceType"] == "Observation")
                m = copy.deepcopy(bundle)
                m["entry"][index]["resource"]["subject"] = {"reference": wrong}
                where = f"Bundle.entry[{index}].resource.subject"
                out.append(
                    Case(
                        f"{case}/Bundle/reference:entry-{index}-subject",
                        "bundle",
                        m,
                        "reference",
                        True,
                        where,
                    )
                )
                break
    return out


@cache
def corpus() -> tuple[Case, ...]:
    """The whole corpus, in a fixed order."""
    cases = resource_cases() + bundle_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "corpus case names must be unique"
    return tuple(cases)


def main() -> None:
    cases = corpus()
    for c in cases:
        print(c.name)
    print(Counter(c.mutation for c in cases), len(cases))


if __name__ == "__main__":
    main()
