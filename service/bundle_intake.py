"""A FHIR Bundle as an EHR posts it -> one prepared case per Patient, and the answer per entry.

The Bundle may be a transaction, batch or collection of profiled resources (as ``ivclms map`` writes
them) or of plain R4 resources (recognised by ``service.mapping.recognise``), for one patient or
many. Resources are grouped by the references between them: each group must hold exactly one
Patient, and becomes one case. Provenance entries are not data: the service writes its own.

Transactions and collections are all or nothing; in a batch each patient's group stands alone, so
one bad group fails only its own entries.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.case_files import CaseFileError, unmap_bundle
from service.errors import Issue, ServiceError, Unprocessable
from service.intake import Intake, Prepared
from service.limits import check_bundle_entries, check_cases, check_resources
from service.mapping.recognise import BUNDLE_TYPES, profile_bundle
from service.mapping.spec import IDENTIFIER_SYSTEM, MappingError, full_url, split_identifier
from service.model import validate_case
from service.model.fields import fold_source
from service.references import references

NOT_DATA = frozenset({"Provenance"})
_ENTRY = re.compile(r"^Bundle\.entry\[(\d+)\]")


@dataclass
class Group:
    """One patient's entries (positions in the posted Bundle) and what became of them."""

    entries: list[int]
    prepared: Prepared | None = None
    urls: dict[int, str] = field(default_factory=dict)
    """Entry position -> the ``urn:uuid:`` full URL of the profiled resource it became."""
    error: ServiceError | None = None


@dataclass(frozen=True)
class ReadBundle:
    kind: str
    groups: list[Group]
    skipped: list[int]
    """Entries that carry no case data (Provenance)."""


def _where(i: int, rest: str = "") -> str:
    return f"Bundle.entry[{i}]{rest}"


def _resources(bundle: Any) -> list[dict[str, Any]]:
    """The entry resources, after checking the Bundle's shape (Unprocessable naming the element)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise Unprocessable([Issue("structure", "resourceType: must be Bundle", "Bundle.resourceType")])
    if bundle.get("type") not in BUNDLE_TYPES:
        message = f"Bundle.type: must be one of {', '.join(BUNDLE_TYPES)}"
        raise Unprocessable([Issue("not-supported", message, "Bundle.type")])
    entries = bundle.get("entry")
    if not isinstance(entries, list) or not entries:
        raise Unprocessable(
            [Issue("required", "Bundle.entry: at least one entry is required", "Bundle.entry")]
        )
    resources = []
    issues = []
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            issues.append(Issue("required", f"{_where(i)}: must hold a resource", _where(i, ".resource")))
            continue
        resources.append(resource)
    if issues:
        raise Unprocessable(issues)
    return resources


def _groups(bundle: dict[str, Any], resources: list[dict[str, Any]], skip: set[int]) -> list[list[int]]:
    """Positions grouped by the references between entries (connected components)."""
    names: dict[str, int] = {}
    for i, (entry, resource) in enumerate(zip(bundle["entry"], resources, strict=True)):
        if isinstance(entry.get("fullUrl"), str):
            names[entry["fullUrl"]] = i
        if isinstance(resource.get("id"), str):
            names[f"{resource['resourceType']}/{resource['id']}"] = i
    parent = list(range(len(resources)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, resource in enumerate(resources):
        if i in skip:
            continue
        for _, ref in references(resource):
            j = names.get(ref["reference"])
            if j is not None and j not in skip:
                parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(resources)):
        if i not in skip:
            groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _is_profiled(resources: list[dict[str, Any]]) -> bool:
    return all(
        any(
            ident.get("system") == IDENTIFIER_SYSTEM
            for ident in r.get("identifier", [])
            if isinstance(ident, dict)
        )
        and r.get("meta", {}).get("profile")
        for r in resources
    )


def _business_url(resource: dict[str, Any], case: dict[str, Any]) -> str:
    """The full URL the resource is stored under: its business identifier's key, under the case's
    normalised source system and case id (an upper-case source is stored lower-cased)."""
    value = next(i["value"] for i in resource["identifier"] if i.get("system") == IDENTIFIER_SYSTEM)
    key = split_identifier(str(value))[2]
    return full_url(f"{case['source_system']}|{case['case_id']}|{key}")


def _read_group(
    bundle: dict[str, Any], resources: list[dict[str, Any]], group: Group, intake: Intake, source_system: str
) -> None:
    entries = [bundle["entry"][i] for i in group.entries]
    sub = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    mine = [resources[i] for i in group.entries]
    patients = [i for i in group.entries if resources[i]["resourceType"] == "Patient"]
    if len(patients) != 1:
        where = _where(group.entries[0])
        message = f"{where}: linked resources must belong to exactly one Patient (found {len(patients)})"
        raise Unprocessable([Issue("invariant", message, where)])
    try:
        if _is_profiled(mine):
            case = unmap_bundle(sub)  # validated: source and case id normalised
            group.urls = {i: _business_url(resources[i], case) for i in group.entries}
        else:
            profiled = profile_bundle(sub, source_system=fold_source(source_system))
            if profiled.issues:
                issues = [
                    Issue(
                        "not-supported",
                        f"{_where(group.entries[x.entry])}: {x.resource}: {x.message}",
                        _where(group.entries[x.entry]),
                    )
                    for x in profiled.issues
                ]
                raise Unprocessable(issues)
            case = unmap_bundle(profiled.bundle)
            group.urls = {group.entries[k]: url for k, url in profiled.placed.items()}
    except (MappingError, CaseFileError) as error:
        raise Unprocessable(
            [Issue("processing", f"{_where(patients[0])}: {error}", _where(patients[0]))]
        ) from None
    group.prepared = intake.prepare_valid(validate_case(case))


def _entry_of(issue: Issue) -> int | None:
    found = _ENTRY.match(issue.expression or "")
    return int(found.group(1)) if found else None


def read_bundle(
    bundle: Any, *, intake: Intake, source_system: str, check: Callable[[Any], list[Issue]] | None = None
) -> ReadBundle:
    """Every patient's case prepared (nothing stored); raises Unprocessable when all-or-nothing fails.

    ``check`` validates the Bundle as posted (base R4, and the profiles its resources claim), so a
    broken element is reported where the EHR put it, before recognition reads the resources."""
    if isinstance(bundle, dict) and isinstance(bundle.get("entry"), list):
        check_bundle_entries(len(bundle["entry"]), intake.limits)
    resources = _resources(bundle)
    # Cost limits first (grouping is cheap): validation and mapping run only on a Bundle within them.
    skipped = [i for i, r in enumerate(resources) if r["resourceType"] in NOT_DATA]
    groups = [Group(g) for g in _groups(bundle, resources, set(skipped))]
    check_cases(len(groups), intake.limits, "Bundle.entry")
    for group in groups:
        check_resources(len(group.entries), intake.limits, _where(group.entries[0]))
    problems = check(bundle) if check is not None else []
    batch = bundle["type"] == "batch"
    if problems and (not batch or any(_entry_of(p) is None for p in problems)):
        raise Unprocessable(problems)
    if not groups:
        raise Unprocessable([Issue("required", "Bundle.entry: no Patient and no case data", "Bundle.entry")])
    for group in groups:
        own = [p for p in problems if _entry_of(p) in group.entries]
        if own:
            group.error = Unprocessable(own)
            continue
        try:
            _read_group(bundle, resources, group, intake, source_system)
        except ServiceError as error:
            group.error = error
    failed = [g.error for g in groups if g.error is not None]
    if failed and bundle["type"] != "batch":
        raise Unprocessable([issue for error in failed for issue in error.issues])
    return ReadBundle(bundle["type"], groups, skipped)
