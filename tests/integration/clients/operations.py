"""What the suite asks every client to do, read off a CapabilityStatement: one operation per declared
interaction, search parameter, _include/_revinclude and operation, plus the protocol features a client
leans on (paging, _count=0, POST search, conditional read). Anything declared that this module does not
know how to exercise is an error, so a newly declared capability cannot go untested."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from tests.integration.clients.conftest import Loaded

KNOWN_OPERATIONS = {"everything", "export"}


@dataclass(frozen=True)
class Op:
    """One request, in terms every client adapter understands (see adapters.py and js/run.mjs)."""

    key: str
    kind: str  # capabilities | read | vread | search | history-instance | history-type | batch |
    # transaction | operation | kickoff
    type: str | None = None
    id: str | None = None
    version: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    post: bool = False
    pages: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    body: dict[str, Any] | None = None
    found: bool = True  # False: the value matches nothing by construction (no loaded resource has one)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "type": self.type,
            "id": self.id,
            "version": self.version,
            "params": [list(p) for p in self.params],
            "post": self.post,
            "pages": self.pages,
            "headers": self.headers or None,
            "name": self.name,
            "body": self.body,
        }


def _camel(name: str) -> str:
    head, *rest = name.split("-")
    return head + "".join(w.title() for w in rest)


def _references(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [value["reference"]] if "reference" in value else []
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def _coding(resource: dict[str, Any]) -> str | None:
    for element in ("code", "medicationCodeableConcept", "type"):
        codings = (
            resource.get(element, {}).get("coding", []) if isinstance(resource.get(element), dict) else []
        )
        if codings:
            return f"{codings[0].get('system', '')}|{codings[0]['code']}"
    return None


DATES = (
    "effectiveDateTime",
    "performedDateTime",
    "onsetDateTime",
    "recordedDate",
    "birthDate",
    "recorded",
    "occurredDateTime",
    "dateAsserted",
    "manufactureDate",
)
PERIODS = ("effectivePeriod", "performedPeriod", "period", "onsetPeriod")
NOTHING = {
    "token": "urn:ivclms:nothing|nothing",
    "reference": "Patient/no-such-patient",
    "date": "ge3000-01-01",
}
"""Values that match nothing, for a declared parameter no loaded resource has (both must say 0)."""


def _date(resource: dict[str, Any]) -> str | None:
    for element in DATES:
        if isinstance(resource.get(element), str):
            return str(resource[element])[:10]
    for element in PERIODS:
        if isinstance(resource.get(element), dict) and "start" in resource[element]:
            return str(resource[element]["start"])[:10]
    return None


def _ongoing_start(resource_type: str, loaded: Loaded) -> str | None:
    """The latest start day of a loaded Period without an end (R4: an ongoing period), if any."""
    starts = [
        str(r[e]["start"])[:10]
        for r in loaded.of(resource_type)
        for e in PERIODS
        if isinstance(r.get(e), dict) and "start" in r[e] and "end" not in r[e]
    ]
    return max(starts, default=None)


def value(resource_type: str, name: str, kind: str, loaded: Loaded) -> tuple[str, bool]:
    """A value of ``name`` that some loaded resource of the type has (so the search finds something),
    and True; else a value that matches nothing, and False."""
    if resource_type == "AuditEvent" and name == "date":
        return "ge2000-01-01T00:00:00Z", True  # the service's own trail: an instant (see the test)
    for resource in loaded.of(resource_type):
        if name == "_id":
            return str(resource["id"]), True
        if name == "_lastUpdated":
            return "ge2000-01-01", True
        if name == "_profile" and resource.get("meta", {}).get("profile"):
            return str(resource["meta"]["profile"][0]), True
        if name == "identifier" and resource.get("identifier"):
            first = resource["identifier"][0]
            return f"{first.get('system', '')}|{first['value']}", True
        if name == "code" and _coding(resource):
            return str(_coding(resource)), True
        if name == "date" and _date(resource):
            return f"ge{_date(resource)}", True
        if kind == "reference":
            elements = ("subject", "patient") if name == "patient" else (_camel(name),)
            found = [r for e in elements for r in _references(resource.get(e))]
            if found:
                return found[0], True
    return NOTHING.get(kind, "nothing"), False


def scope(resource_type: str, loaded: Loaded) -> tuple[tuple[str, str], ...]:
    """HAPI is shared by every test: searches are kept to this run's resources by ``_id``."""
    ids = loaded.ids(resource_type)
    return (("_id", ",".join(ids)),) if ids else ()


def _bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def plan(capability: dict[str, Any], loaded: Loaded) -> list[Op]:
    """Every capability ``capability`` declares, as operations (reads before writes)."""
    ops = [Op("capabilities", "capabilities")]
    writes: list[Op] = []
    (rest,) = capability["rest"]
    for declared in rest["resource"]:
        t = declared["type"]
        ids = loaded.ids(t)
        first = ids[0] if ids else "no-such-id"
        limit = scope(t, loaded)
        for interaction in declared["interaction"]:
            code = interaction["code"]
            if code == "read":
                ops.append(Op(f"{t} read", "read", t, first))
            elif code == "vread":
                ops.append(Op(f"{t} vread", "vread", t, first, version="1"))
            elif code == "history-instance":
                ops.append(Op(f"{t} history-instance", "history-instance", t, first))
            elif code == "history-type":
                ops.append(Op(f"{t} history-type", "history-type", t))
            elif code == "search-type":
                if not ids:  # AuditEvent: every request adds one, so paging _count=1 would not end
                    ops += [Op(f"{t} search-type", "search", t, params=(("_count", "5"),))]
                    ops += [Op(f"{t} search _count=0", "search", t, params=(("_count", "0"),))]
                    ops += [Op(f"{t} search POST _search", "search", t, params=(("_count", "5"),), post=True)]
                    continue
                ops += [
                    Op(f"{t} search-type", "search", t, params=limit),
                    Op(
                        f"{t} search POST _search", "search", t, params=(*limit, ("_count", "500")), post=True
                    ),
                    Op(
                        f"{t} search paging _count=1",
                        "search",
                        t,
                        params=(*limit, ("_count", "1")),
                        pages=True,
                    ),
                    Op(f"{t} search _count=0", "search", t, params=(*limit, ("_count", "0"))),
                ]
            else:
                raise AssertionError(
                    f"{t}: interaction {code!r} is declared but the suite does not exercise it"
                )
        for param in declared.get("searchParam", []):
            name, kind = param["name"], param["type"]
            searched, found = value(t, name, kind, loaded)
            params = ((name, searched),) + (() if name == "_id" else limit)
            ops.append(Op(f"{t} search {name}", "search", t, params=params, found=found))
            ongoing = _ongoing_start(t, loaded) if name == "date" else None
            if ongoing is not None:  # not left to the drawn value: ge a day after an open period's start
                later = (date.fromisoformat(ongoing) + timedelta(days=1)).isoformat()
                ops.append(
                    Op(
                        f"{t} search {name} ge after an ongoing period's start",
                        "search",
                        t,
                        params=((name, f"ge{later}"), *limit),
                    )
                )
        for include in declared.get("searchInclude", []):
            ops.append(Op(f"{t} _include {include}", "search", t, params=(*limit, ("_include", include))))
        for include in declared.get("searchRevInclude", []):
            ops.append(
                Op(f"{t} _revinclude {include}", "search", t, params=(*limit, ("_revinclude", include)))
            )
        if declared.get("conditionalRead") in ("not-match", "full-support"):
            ops.append(Op(f"{t} conditional read", "read", t, first, headers={"If-None-Match": 'W/"1"'}))
        for operation in declared.get("operation", []):
            name = operation["name"]
            if name not in KNOWN_OPERATIONS:
                raise AssertionError(f"{t}: operation ${name} is declared but the suite does not exercise it")
            if name == "everything":
                ops.append(Op(f"{t} $everything", "operation", t, first, name="$everything", pages=True))
            else:
                ops.append(Op(f"{t} $export kick-off", "kickoff", t, first if t == "Group" else None))
    patient = loaded.ids("Patient")[0]
    for interaction in rest.get("interaction", []):
        code = interaction["code"]
        if code == "batch":
            reads = [{"request": {"method": "GET", "url": ref}} for ref in sorted(loaded.resources)[:5]]
            reads.append({"request": {"method": "GET", "url": "Patient/no-such-patient"}})
            ops.append(Op("batch of GET entries", "batch", body=_bundle("batch", reads)))
        elif code == "transaction":
            own = [
                {"resource": _plain(r), "request": {"method": "PUT", "url": ref}}
                for ref, r in sorted(loaded.resources.items())
                if ref.split("/")[0] not in ("Provenance", "Group") and _belongs(r, patient)
            ]
            writes.append(
                Op("transaction re-PUT of one case", "transaction", body=_bundle("transaction", own))
            )
        else:
            raise AssertionError(
                f"system interaction {code!r} is declared but the suite does not exercise it"
            )
    for operation in rest.get("operation", []):
        if operation["name"] != "export":
            raise AssertionError(f"system operation ${operation['name']} is declared but not exercised")
        ops.append(Op("system $export kick-off", "kickoff"))
    return ops + writes


def _plain(resource: dict[str, Any]) -> dict[str, Any]:
    body = dict(resource)
    body["meta"] = {
        k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated")
    }
    return body


def _belongs(resource: dict[str, Any], patient: str) -> bool:
    text = repr(resource)
    return resource["id"] == patient or f"Patient/{patient}" in text or bool(re.search(patient, text))
