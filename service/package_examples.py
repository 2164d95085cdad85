"""Example instances for the package's ``example/`` folder, made by mapping the cases in ``examples/``.

Every profile gets at least one example without anyone writing FHIR by hand: the first example case's
Bundle is taken whole (so the Provenance and every link of one case are shown), then, for each profile
still without an example, the first resource claiming it in a later case, together with every resource
it references. Bundle-internal ``urn:uuid:`` references become ``Type/id`` with readable ids made from
the case id and the element key (``ivc-001-surgery-0-ivc-management``).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from service.case_files import EXAMPLES_DIR, map_case
from service.mapping.spec import IDENTIFIER_SYSTEM
from service.references import references

EXAMPLE_DIR = "example"
EXAMPLE_NOW = "2026-01-01T00:00:00Z"
"""Provenance.recorded of the examples: fixed, so the package is reproducible."""
_ID_MAX = 64
_NOT_ID = re.compile(r"[^a-z0-9]+")
_XHTML = "http://www.w3.org/1999/xhtml"


def example_cases() -> list[Path]:
    """The case series, then the literature-style cases (the only ones with the elements added in
    2026-12: performance status, weight loss, intra-operative events)."""
    return sorted(EXAMPLES_DIR.glob("ivclms-*.json")) + sorted(
        (EXAMPLES_DIR / "literature").glob("ivclms-*.json")
    )


def _business_key(resource: dict[str, Any]) -> str:
    for identifier in resource.get("identifier", []):
        if identifier.get("system") == IDENTIFIER_SYSTEM:
            source_case_key: str = identifier["value"]
            return source_case_key.split("|", 1)[1]  # drop the source system: "IVC-001|surgery[0]"
    return "provenance"


def resource_id(case_id: str, resource: dict[str, Any]) -> str:
    """A readable, valid FHIR id; long keys keep a hash suffix so two never collide."""
    key = _business_key(resource)
    text = key if key.startswith(case_id) else f"{case_id}-{key}"
    slug = _NOT_ID.sub("-", text.lower()).strip("-")
    if len(slug) <= _ID_MAX:
        return slug
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{slug[: _ID_MAX - 9].rstrip('-')}-{digest}"


def _closure(start: str, entries: dict[str, dict[str, Any]]) -> list[str]:
    """``start`` and every full URL it references, directly or not, in a stable order."""
    seen: list[str] = []
    todo = [start]
    while todo:
        url = todo.pop(0)
        if url in seen or url not in entries:
            continue
        seen.append(url)
        todo.extend(ref["reference"] for _, ref in references(entries[url]))
    return seen


def _profile(resource: dict[str, Any]) -> str:
    profile: str = resource["meta"]["profile"][0]
    return profile


def _narrative(resource: dict[str, Any], case_file: str) -> dict[str, str]:
    name = _profile(resource).rsplit("/", 1)[-1]
    text = f"Example of {name}: {resource['resourceType']} mapped from examples/{case_file}."
    return {"status": "generated", "div": f'<div xmlns="{_XHTML}"><p>{text}</p></div>'}


def example_resources() -> list[dict[str, Any]]:
    """The example instances, each with id, narrative and resolved ``Type/id`` references."""
    chosen: list[dict[str, Any]] = []
    covered: set[str] = set()
    for number, path in enumerate(example_cases()):
        data = json.loads(path.read_text(encoding="utf-8"))
        bundle = map_case(data, now=EXAMPLE_NOW)
        entries = {e["fullUrl"]: e["resource"] for e in bundle["entry"]}
        if number == 0:
            wanted = list(entries)
        else:
            wanted = []
            for url, resource in entries.items():
                if _profile(resource) not in covered:
                    wanted.extend(u for u in _closure(url, entries) if u not in wanted)
        ids = {
            url: f"{entries[url]['resourceType']}/{resource_id(data['case_id'], entries[url])}"
            for url in entries
        }
        for url in wanted:
            resource = entries[url]
            for _, ref in references(resource):
                ref["reference"] = ids[ref["reference"]]
            out = {"resourceType": resource["resourceType"], "id": ids[url].split("/", 1)[1]}
            out.update({k: v for k, v in resource.items() if k not in ("resourceType", "id")})
            out["text"] = _narrative(resource, path.relative_to(EXAMPLES_DIR).as_posix())
            chosen.append(out)
            covered.add(_profile(resource))
    return chosen


def example_filename(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}-{resource['id']}.json"
