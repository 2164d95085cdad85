"""A FHIR Bundle as an EHR posts it -> one prepared case per Patient, and the answer per entry.

The Bundle may be a transaction, batch or collection of profiled resources (as ``ivclms map`` writes
them) or of plain R4 resources (recognised by ``service.mapping.recognise``), for one patient or
many. Resources are grouped by the references between them: each group must hold exactly one
Patient, and becomes one case. Provenance entries are not data: the service writes its own.

Transactions and collections are all or nothing; in a batch each patient's group stands alone, so
one bad group fails only its own entries.

Entries mean what they say (issue 13 item 2):

- Resource ids are assigned by the service from business identifiers (the same in every
  installation), so ``PUT Type/id`` with an id of the client's choosing cannot be honoured: the
  entry is refused with 405, as R4 http.html lists for update ("405 Method Not allowed - the
  resource did not exist prior to the update, and the server does not allow client defined ids"),
  pointing to ``POST`` or conditional update ``PUT Type?identifier=system|value``. A ``PUT`` to the
  id the service assigns (a resource read back from here) is an update.
- Provenance entries are not stored (the service writes its own for each case version): their
  entry says so in an outcome, with no ``location``.
- ``GET`` (read, vread) and ``DELETE`` entries carry no resource; they are answered per entry by
  the caller of ``read_bundle`` (``Operation``). They run in R4's transaction order: DELETE before
  the writes, GET after them. ``DELETE`` withdraws a whole case (``DELETE Patient/id``) and is
  taken in a batch only: a transaction's writes and a withdrawal are not one database transaction
  here, so a transaction with a DELETE entry is refused (422) rather than half applied.
- A resource is not read as the case element its codes make it when its status or a modifier denies
  the fact (``mappings/negations.yaml``: a ``not-done`` surgery, an ``entered-in-error`` Observation, a
  refuted primary cancer, a modifierExtension the mapping does not read), and ``Patient.deceased[x]``
  must agree with the vital status: 422 naming the element, nothing stored (outside review, fix B).
- A case rule broken by the case the Bundle gives (``follow_up[0].date``) is named where the client
  wrote the value, ``Bundle.entry[i].resource.<element>`` with the case path and the rule in the
  diagnostics (``service.mapping.trace``; issue 15, outside review, L7); a rule no single element
  writes (a derived value, the whole case) keeps its case path.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.case_files import CaseFileError, unmap_bundle
from service.errors import Issue, ServiceError, Unprocessable
from service.intake import Intake, Prepared
from service.limits import check_bundle_entries, check_cases, check_resources
from service.mapping.negation import denials, profiled_template, vital_contradiction
from service.mapping.recognise import (
    BUNDLE_TYPES,
    is_primary_cancer,
    local_concept_maps,
    profile_bundle,
    read_field,
    recognise,
    translate,
    what_a_case_is,
)
from service.mapping.reverse import DateWrite, SharedDateConflict
from service.mapping.spec import IDENTIFIER_SYSTEM, MappingError, Template, full_url, split_identifier
from service.mapping.trace import traced
from service.model import validate_case
from service.model.fields import fold_source
from service.references import references

NOT_DATA = frozenset({"Provenance"})
VITAL_STATUS = "vital-status"
"""The template whose ``vital_status`` field ``Patient.deceased[x]`` must agree with."""
_ENTRY = re.compile(r"^Bundle\.entry\[(\d+)\]")
MOST_ISSUES = 20
"""At most this many issues in a refusal (then one saying how many were left out): an EHR that posts a
whole patient record must get an answer a person reads, not one issue per entry."""
_WHERE = re.compile(r"^Bundle\.entry\[\d+\][^:\s]*: ")
_LABEL = re.compile(r"^[A-Z][A-Za-z]*(?:/[^\s:]+| \S+)?: ")
_DETAIL = re.compile(r" \(.*\)$")


@dataclass
class Group:
    """One patient's entries (positions in the posted Bundle) and what became of them."""

    entries: list[int]
    prepared: Prepared | None = None
    urls: dict[int, str] = field(default_factory=dict)
    """Entry position -> the ``urn:uuid:`` full URL of the profiled resource it became."""
    error: ServiceError | None = None


OPERATIONS = frozenset({"GET", "HEAD", "DELETE"})
"""Entry methods that carry no resource: answered per entry, not stored as case data."""
_INSTANCE = re.compile(r"^/?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/(\d+))?/?$")


@dataclass(frozen=True)
class Operation:
    """A GET or DELETE entry: what it names, or why it cannot be answered."""

    position: int
    method: str
    resource_type: str = ""
    resource_id: str = ""
    version: int | None = None
    error: ServiceError | None = None


@dataclass(frozen=True)
class ReadBundle:
    kind: str
    groups: list[Group]
    skipped: list[int]
    """Entries that carry no case data (Provenance)."""
    operations: list[Operation] = field(default_factory=list)
    """GET and DELETE entries, to be answered one by one."""


def _request(entry: Any) -> tuple[str, str]:
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict):
        return "", ""
    return str(request.get("method", "")).upper(), str(request.get("url", ""))


def _operation(i: int, method: str, url: str, kind: str) -> Operation:
    where = _where(i, ".request.url")
    found = _INSTANCE.match(url) if "?" not in url else None
    if found is None:
        message = (
            f"{where}: {url!r}: only reads by id are answered in a Bundle here ({method} Type/id"
            + ("" if method == "DELETE" else " or Type/id/_history/version")
            + "); search with GET [base]/Type?... itself"
        )
        return Operation(i, method, error=ServiceError([Issue("not-supported", message, where)], 400))
    resource_type, resource_id, version = found.groups()
    if method == "DELETE" and version is not None:
        message = f"{where}: a version cannot be deleted; DELETE {resource_type}/{resource_id}"
        return Operation(i, method, error=ServiceError([Issue("not-supported", message, where)], 400))
    if method == "DELETE" and kind != "batch":
        message = (
            f"{where}: DELETE is taken in a batch only (a case is withdrawn on its own, not within "
            "a transaction's writes); send it in a Bundle of type batch or as DELETE [base]/Patient/id"
        )
        raise Unprocessable([Issue("not-supported", message, where)])
    return Operation(i, method, resource_type, resource_id, int(version) if version else None)


def _client_ids(bundle: dict[str, Any], group: Group) -> list[Issue]:
    """``PUT Type/id`` entries whose id is not the one the service assigns (see the module's note)."""
    issues = []
    for i in group.entries:
        method, url = _request(bundle["entry"][i])
        found = _INSTANCE.match(url) if method == "PUT" and "?" not in url else None
        if found is None:
            continue
        assigned = group.urls.get(i, "").removeprefix("urn:uuid:")
        if found.group(2) == assigned:
            continue
        where = _where(i, ".request.url")
        message = (
            f"{where}: PUT {found.group(1)}/{found.group(2)}: client-assigned ids are not supported; "
            "this service assigns each resource's id from its business identifiers"
            + (f" (this one would be {found.group(1)}/{assigned})" if assigned else "")
            + f". Send it with POST {found.group(1)}, or as a conditional update "
            f"PUT {found.group(1)}?identifier=system|value"
        )
        issues.append(Issue("not-supported", message, where))
    return issues


def _where(i: int, rest: str = "") -> str:
    return f"Bundle.entry[{i}]{rest}"


def _resources(bundle: Any) -> list[dict[str, Any] | None]:
    """The entry resources (None for a GET or DELETE entry), after checking the Bundle's shape
    (Unprocessable naming the element)."""
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
    resources: list[dict[str, Any] | None] = []
    issues = []
    for i, entry in enumerate(entries):
        if bundle["type"] != "collection" and _request(entry)[0] in OPERATIONS:
            resources.append(None)
            continue
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            issues.append(Issue("required", f"{_where(i)}: must hold a resource", _where(i, ".resource")))
            continue
        resources.append(resource)
    if issues:
        raise Unprocessable(issues)
    return resources


def _groups(
    bundle: dict[str, Any], resources: list[dict[str, Any] | None], skip: set[int]
) -> list[list[int]]:
    """Positions grouped by the references between entries (connected components); ``skip``
    (Provenance, GET and DELETE entries) in none."""
    names: dict[str, int] = {}
    for i, (entry, resource) in enumerate(zip(bundle["entry"], resources, strict=True)):
        if resource is None:
            continue
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
        if i in skip or resource is None:
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
    bundle: dict[str, Any],
    all_resources: Sequence[dict[str, Any] | None],
    group: Group,
    intake: Intake,
    source_system: str,
) -> None:
    resources = {i: r for i in group.entries if (r := all_resources[i]) is not None}
    entries = [bundle["entry"][i] for i in group.entries]
    sub = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    mine = list(resources.values())
    patients = [i for i in group.entries if resources[i]["resourceType"] == "Patient"]
    if len(patients) != 1:
        where = _where(group.entries[0])
        message = f"{where}: linked resources must belong to exactly one Patient (found {len(patients)})"
        raise Unprocessable([Issue("invariant", message, where)])
    profiled_input = _is_profiled(mine)
    read = {i: _template_of(resources[i], profiled_input) for i in group.entries}
    denied = [
        Issue(
            "business-rule", f"{_where(i, '.resource.' + d.path)}: {d.rule}", _where(i, ".resource." + d.path)
        )
        for i in group.entries
        for d in denials(resources[i], read[i][0])
    ]
    if denied:
        raise Unprocessable(denied)
    _check_vital_status(resources, read, patients[0])
    positions = dict(enumerate(group.entries))  # entry unmap_bundle reads -> position in the post
    read_bundle = sub
    try:
        if profiled_input:
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
            back = {url: group.entries[k] for k, url in profiled.placed.items()}
            positions = {j: back[e["fullUrl"]] for j, e in enumerate(profiled.bundle["entry"])}
            read_bundle = profiled.bundle
            case = unmap_bundle(profiled.bundle)
            group.urls = {group.entries[k]: url for k, url in profiled.placed.items()}
    except SharedDateConflict as conflict:
        raise Unprocessable(_date_conflict(conflict, positions)) from None
    except (MappingError, CaseFileError) as error:
        raise Unprocessable(
            [Issue("processing", f"{_where(patients[0])}: {error}", _where(patients[0]))]
        ) from None
    except Unprocessable as error:  # a case rule: named where the client wrote the value (L7)
        raise Unprocessable(traced(error.issues, read_bundle, positions)) from None
    try:
        group.prepared = intake.prepare_valid(validate_case(case))
    except Unprocessable as error:
        raise Unprocessable(traced(error.issues, read_bundle, positions)) from None


def _date_conflict(conflict: SharedDateConflict, positions: dict[int, int]) -> list[Issue]:
    """The conflict with its elements named where the client put them: ``positions`` maps an entry of
    the Bundle that was read (the group's own entries, or the profiled Bundle they became) to its
    position in the posted Bundle."""

    def where(write: DateWrite) -> str:
        return _where(positions[write.entry], ".resource." + write.element)

    message = conflict.describe(where)
    return [Issue("business-rule", message, where(w)) for w in (conflict.first, conflict.second)]


def _template_of(resource: dict[str, Any], profiled: bool) -> tuple[Template | None, dict[str, Any]]:
    """The case element a resource is read as (by its profile for profiled input, else recognised from
    its codes as ``profile_bundle`` does; None if neither), and the resource as it is read (hospital
    codes translated)."""
    readable = copy.deepcopy(resource)
    translate(readable, local_concept_maps())
    if profiled:
        return profiled_template(resource), readable
    recognised = recognise(readable)
    return (None if isinstance(recognised, str) else recognised), readable


def _check_vital_status(
    resources: dict[int, dict[str, Any]],
    read: dict[int, tuple[Template | None, dict[str, Any]]],
    patient: int,
) -> None:
    """``Patient.deceased[x]`` must not contradict the vital status the case stores from the
    vital-status Observation: the case keeps one of them, so the other would be dropped silently."""
    for i, (template, readable) in read.items():
        if template is None or template.name != VITAL_STATUS:
            continue
        why = vital_contradiction(resources[patient], read_field(template, "vital_status", readable))
        if why is None:
            continue
        element = "deceasedDateTime" if "deceasedDateTime" in resources[patient] else "deceasedBoolean"
        where = _where(patient, f".resource.{element}")
        message = (
            f"{where} and {_where(i, '.resource.valueCodeableConcept')} contradict each other: {why}; "
            "a case has one vital status"
        )
        raise Unprocessable([Issue("business-rule", message, where)])


def _entry_of(issue: Issue) -> int | None:
    found = _ENTRY.match(issue.expression or "")
    return int(found.group(1)) if found else None


def _reason(issue: Issue) -> str:
    """An issue's message without where it is, which resource, and its details: what entries share."""
    text = _WHERE.sub("", issue.diagnostics, count=1)
    return _DETAIL.sub("", _LABEL.sub("", text, count=1))


def _cap(issues: list[Issue]) -> list[Issue]:
    if len(issues) <= MOST_ISSUES + 1:
        return issues
    left = len(issues) - MOST_ISSUES
    note = Issue(
        "too-costly", f"{left} more issues left out (of {len(issues)})", "Bundle.entry", "information"
    )
    return [*issues[:MOST_ISSUES], note]


def brief(
    issues: list[Issue], resources: Sequence[dict[str, Any] | None], positions: list[int]
) -> list[Issue]:
    """The issues of a refusal as a person reads them (issue 13 item 8).

    When the entries at ``positions`` hold no primary IVC leiomyosarcoma Condition, the data is not an
    IVC-LMS case: the first issue says what the service takes and what was missing, and the others are
    grouped per resource type and reason, with counts. Either way at most ``MOST_ISSUES`` (+1 saying
    how many were left out)."""
    mine = [resources[i] for i in positions if resources[i] is not None]
    if any(is_primary_cancer(r) for r in mine if r is not None):
        return _cap(issues)
    types: dict[str, int] = {}
    for r in mine:
        if r is not None:
            types[r["resourceType"]] = types.get(r["resourceType"], 0) + 1
    held = ", ".join(f"{n} {t}" for t, n in sorted(types.items(), key=lambda x: (-x[1], x[0])))
    lead = Issue(
        "not-supported",
        f"not an IVC-LMS case: {what_a_case_is()}. Missing: no Condition coded so among the "
        f"{len(mine)} entries ({held}); nothing was stored",
        "Bundle.entry",
    )
    groups: dict[tuple[str, str, str], list[int | None]] = {}
    for issue in issues:
        at = _entry_of(issue)
        found = resources[at] if at is not None and at < len(resources) else None
        kind = found["resourceType"] if found is not None else "Bundle"
        groups.setdefault((kind, _reason(issue), issue.code), []).append(at)
    grouped = []
    for (kind, reason, code), where in sorted(groups.items(), key=lambda x: (-len(x[1]), x[0])):
        known = [w for w in where if w is not None]
        shown = ", ".join(f"Bundle.entry[{w}]" for w in known[:3]) + (", ..." if len(known) > 3 else "")
        count = f"{len(where)} {kind} entr{'y' if len(where) == 1 else 'ies'}"
        grouped.append(
            Issue(
                code,
                f"{count}: {reason}" + (f" ({shown})" if shown else ""),
                _where(known[0]) if known else None,
            )
        )
    return _cap([lead, *grouped])


def read_bundle(
    bundle: Any, *, intake: Intake, source_system: str, check: Callable[[Any], list[Issue]] | None = None
) -> ReadBundle:
    """Every patient's case prepared (nothing stored); raises Unprocessable when all-or-nothing fails.

    ``check`` validates the Bundle as posted (base R4, and the profiles its resources claim), so a
    broken element is reported where the EHR put it, before recognition reads the resources."""
    if isinstance(bundle, dict) and isinstance(bundle.get("entry"), list):
        check_bundle_entries(len(bundle["entry"]), intake.limits)
    resources = _resources(bundle)
    kind = bundle["type"]
    operations = [
        _operation(i, *_request(bundle["entry"][i]), kind) for i, r in enumerate(resources) if r is None
    ]
    # Cost limits first (grouping is cheap): validation and mapping run only on a Bundle within them.
    skipped = [i for i, r in enumerate(resources) if r is not None and r["resourceType"] in NOT_DATA]
    apart = set(skipped) | {o.position for o in operations}
    groups = [Group(g) for g in _groups(bundle, resources, apart)]
    check_cases(len(groups), intake.limits, "Bundle.entry")
    for group in groups:
        check_resources(len(group.entries), intake.limits, _where(group.entries[0]))
    problems = check(bundle) if check is not None else []
    batch = kind == "batch"
    everything = list(range(len(resources)))
    if problems and (not batch or any(_entry_of(p) is None for p in problems)):
        raise Unprocessable(brief(problems, resources, everything))
    if not groups and not operations:
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
            continue
        client_ids = _client_ids(bundle, group)
        if client_ids:
            group.prepared = None
            group.error = ServiceError(client_ids, 405)
    failed = [g.error for g in groups if g.error is not None]
    if failed and not batch:
        issues = [issue for error in failed for issue in error.issues]
        if all(error.status == 405 for error in failed):
            raise ServiceError(issues, 405)
        raise Unprocessable(brief(issues, resources, everything))
    for group in groups:
        if isinstance(group.error, Unprocessable):
            group.error = Unprocessable(brief(group.error.issues, resources, group.entries))
    return ReadBundle(kind, groups, skipped, operations)
