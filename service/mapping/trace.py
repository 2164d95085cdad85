"""A case rule's issue (``follow_up[0].date``) traced back to the FHIR element it was read from.

``POST /fhir`` reads a Bundle into a case and validates the case, so a rule names a case path; the
client sent Bundle entries. Every profiled resource carries its element key in its business
identifier and its template says which element writes which field, so ``follow_up[0].date`` is
``Bundle.entry[i].resource.effectiveDateTime`` of the entry whose key is ``follow_up[0]`` (issue 15,
outside review, L7). An issue whose path no single resource writes (a rule over the whole case, a
derived value) keeps its case path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.errors import Issue
from service.mapping import datetimes, paths
from service.mapping.forward import resolve
from service.mapping.spec import (
    IDENTIFIER_SYSTEM,
    MappingError,
    case_path,
    case_tokens,
    spec,
    split_identifier,
)


def written_at(bundle: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """Case path -> (entry, element) of the resource that writes it, for a Bundle of profiled
    resources; a parent's own element before a child's copy of it (``^.date``)."""
    out: dict[str, tuple[int, str]] = {}
    copies: dict[str, tuple[int, str]] = {}
    for position, entry in enumerate(bundle.get("entry", [])):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        profiles = resource.get("meta", {}).get("profile", [])
        template = next((t for p in profiles if (t := spec().by_profile(p)) is not None), None)
        value = next(
            (i.get("value") for i in resource.get("identifier", []) if i.get("system") == IDENTIFIER_SYSTEM),
            None,
        )
        if template is None or not isinstance(value, str):
            continue
        try:
            item = case_tokens(split_identifier(value)[2].split("#", 1)[0])
        except (MappingError, ValueError):  # a malformed identifier is reported by bundle_to_case
            continue
        for f in template.group.fields:
            if f.items is not None or paths.has_every(f.path):
                continue
            element = datetimes.read_date(resource, f.path)[1] if f.kind == "date" else f.path
            if paths.get(resource, element) is None and not _period_start(resource, element):
                continue
            path = case_path(list(resolve(f.field, item)))
            (copies if f.field.startswith("^.") else out).setdefault(path, (position, element))
    return {**copies, **out}


def _period_start(resource: dict[str, Any], element: str) -> bool:
    """Whether ``element`` is the missing start of a Period the resource has (a required date the
    client sent as ``performedPeriod {end}`` is named there; issue 15, second outside review, L2)."""
    period = element.removesuffix(".start")
    return period != element and period.endswith("Period") and paths.get(resource, period) is not None


def traced(issues: list[Issue], bundle: dict[str, Any], positions: Mapping[int, int]) -> list[Issue]:
    """``issues`` with every case path that one resource of ``bundle`` writes named as that element,
    at its position in the posted Bundle (``positions``: entry of ``bundle`` -> posted entry)."""
    where = written_at(bundle)
    out = []
    for issue in issues:
        found = where.get(issue.expression or "")
        if found is None or found[0] not in positions:
            out.append(issue)
            continue
        element = f"Bundle.entry[{positions[found[0]]}].resource.{found[1]}"
        out.append(Issue(issue.code, f"{element} ({issue.diagnostics})", element, issue.severity))
    return out
