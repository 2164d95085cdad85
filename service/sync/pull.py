"""Pull: what changed on the hospital's FHIR server, merged into the stored cases (the other half of sync).

One pull searches the server for

* resources carrying our business identifiers (``identifier=<element system>|``, per resource type of
  ``mappings/case-fhir.yaml``): resources the worker wrote, possibly changed on the server since, or
  cases another installation synced there;
* plain R4 resources of the patients the worker synced (``subject=Patient/<server id>``, the ids
  ``synced_resources`` recorded), like a follow-up Observation an EHR wrote directly,

each ``_lastUpdated=gt<since>`` (the cursor of the last successful pull of that server, less
``OVERLAP_S``, unless ``since`` is given), groups them per case, and merges them into the stored case:

1. The base is the Bundle of the case's current version (Provenance left out).
2. A resource with our business identifier replaces the entry of that identifier (added if absent);
   its server ids in references are translated back to the Bundle's ``urn:uuid`` full URLs.
3. Plain resources are recognised (``service.mapping.recognise.profile_bundle``) *in the context of
   the base*, so a follow-up Observation is placed next to the stored visits; the element keys of the
   result are then translated back to the stored case's keys: an item the case already has keeps its
   index, a new list item is appended after the stored ones. Stored elements are never renumbered,
   so nothing else of the case changes and no synced resource changes its identifier.
4. The merged Bundle is read back into a case, validated and stored through ``Intake.update`` with
   ``If-Match`` on the version the merge started from: an unchanged case stores no version; a case
   changed meanwhile is merged again.

A server change is only merged when it is one: a resource whose ``meta.versionId`` is the one the
worker recorded (``synced_resources``) or the pull merged before (``pulled_resources``) is skipped.
A server change of an element the service also changed since the two last agreed (the element's entry
differs between the current version and the version recorded at the last sync or pull) is a
*conflict*: recorded in ``pull_conflicts`` and shown by ``/sync/status``, never merged, unless the
server's content maps to exactly what one of the service's versions since then holds (its own write,
or the same change on both sides). An operator settles a conflict (``service.sync.resolve``): the
server version it named is then decided and not merged or recorded again. A case whose merge the
mapping or the validation rejects is recorded there as ``rejected``. A case the service does not have
whose resources all carry the withdrawal marks (``retraction:``) was withdrawn where it came from: it
is ignored, not imported.
Plain resources no template recognises are not case data and are ignored (counted).
When the worker later sends the case, what the pull merged is updated where it lives on the server
(``service.sync.adopt``), so a plain resource is not copied beside itself.

Logs carry case refs (uuids), server ids of nothing, and counts: never resource content.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from service.case_files import CaseFileError, unmap_bundle
from service.clock import instant, utcnow
from service.db import READ_ONLY
from service.errors import Conflict, PreconditionFailed, ServiceError
from service.fhir.client import FhirClient, FhirError
from service.intake import Accepted, Intake
from service.mapping.forward import case_to_bundle
from service.mapping.negation import denials, profiled_template
from service.mapping.recognise import profile_bundle
from service.mapping.retract import withdrawn
from service.mapping.reverse import SharedDateConflict
from service.mapping.spec import (
    IDENTIFIER_SYSTEM,
    MappingError,
    case_get,
    case_path,
    case_tokens,
    full_url,
    identifier_value,
    spec,
    split_identifier,
)
from service.model import dates, validate_case
from service.store import cases as store
from service.store.cases import ACTIVE
from service.store.pull_tables import pull_conflicts, pull_cursors, pulled_resources
from service.store.tables import synced_resources

log = logging.getLogger("ivclms.pull")

OVERLAP_S = 60.0
"""The cursor is moved back this much before searching: it covers clock skew between the service and
the server and transactions committed on the server with an earlier timestamp. Re-reading a resource
is harmless (its version is recorded)."""
PAGE_SIZE = 200
PATIENTS_PER_SEARCH = 40
"""Known patients ORed into one ``subject=Patient/a,Patient/b,...`` search."""
VERSIONS_CHECKED = 10
"""How many recent versions of a case a server resource is compared with to recognise the service's own
write (the worker may be sending a newer version while the pull reads)."""
NOT_DATA = frozenset({"Provenance"})
CONFLICT = "conflict"
REJECTED = "rejected"
AUTHOR = "pull"
_CANON_NOW = "2000-01-01T00:00:00Z"
_SERVER_META = ("versionId", "lastUpdated", "source")


@dataclass
class PullReport:
    server_url: str
    since: datetime | None
    cursor: datetime | None = None
    """The new cursor (None when the pull did not finish and the cursor was left alone)."""
    fetched: int = 0
    cases: int = 0
    created: int = 0
    changed: int = 0
    unchanged: int = 0
    conflicts: int = 0
    rejected: int = 0
    ignored: int = 0
    """Plain resources of known patients that no template recognises or places (not case data)."""
    failed: int = 0
    """Cases whose merge failed unexpectedly (logged by type; the cursor stays, so the next pull retries)."""

    def summary(self) -> str:
        return (
            f"{self.fetched} resources pulled for {self.cases} cases: {self.created} new, {self.changed} "
            f"changed, {self.unchanged} unchanged; {self.conflicts} conflicts, {self.rejected} rejected, "
            f"{self.ignored} ignored, {self.failed} failed"
        )


# ---- what to search -------------------------------------------------------------------------------


@cache
def resource_types() -> tuple[str, ...]:
    """Every resource type a template writes (Provenance is not data)."""
    return tuple(sorted({t.resource_type for t in spec().templates} - NOT_DATA))


@cache
def patient_params() -> tuple[tuple[str, str], ...]:
    """(resource type, search parameter) of the reference each template writes to the Patient."""
    found = {
        (t.resource_type, ref.path.split("[", 1)[0])
        for t in spec().templates
        for ref in t.refs
        if ref.to == "patient"
    }
    return tuple(sorted(found))


def search(client: FhirClient, resource_type: str, params: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """Every match of a search, page by page (``Cache-Control: no-cache``: HAPI reuses cached results)."""
    headers = {"Cache-Control": "no-cache"}
    url: str | None = resource_type
    query: dict[str, Any] | None = {**params, "_count": PAGE_SIZE}
    while url:
        page = client.request("GET", url, params=query, headers=headers).json()
        if not isinstance(page, dict) or page.get("resourceType") != "Bundle":
            raise FhirError(f"GET {resource_type}: the answer is not a Bundle")
        for entry in page.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            mode = (entry.get("search") or {}).get("mode", "match") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and mode == "match":
                yield resource
        url = next(
            (str(link["url"]) for link in page.get("link") or [] if link.get("relation") == "next"), None
        )
        query = None  # the next link carries the query


def business(resource: Mapping[str, Any]) -> str | None:
    for ident in resource.get("identifier", []) or []:
        if isinstance(ident, dict) and ident.get("system") == IDENTIFIER_SYSTEM and ident.get("value"):
            return str(ident["value"])
    return None


def _name(resource: Mapping[str, Any]) -> tuple[str, str]:
    return str(resource.get("resourceType")), str(resource.get("id"))


def _version(resource: Mapping[str, Any]) -> str:
    return str((resource.get("meta") or {}).get("versionId") or "")


def _patient_of(resource: Mapping[str, Any]) -> str | None:
    """The Patient server id a plain resource refers to (``subject`` or ``patient``)."""
    for element in ("subject", "patient"):
        node = resource.get(element)
        ref = node.get("reference") if isinstance(node, dict) else None
        if isinstance(ref, str):
            parts = ref.split("/_history/")[0].rstrip("/").split("/")
            if len(parts) >= 2 and parts[-2] == "Patient":
                return parts[-1]
    return None


# ---- the stored side ------------------------------------------------------------------------------


def read_cursor(engine: Engine, server_url: str) -> datetime | None:
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        found: datetime | None = conn.execute(
            select(pull_cursors.c.pulled_until).where(pull_cursors.c.server_url == server_url)
        ).scalar_one_or_none()
    return found


def _upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], keys: Sequence[str]) -> None:
    if not rows:
        return
    name = conn.dialect.name
    if name in ("postgresql", "sqlite"):
        dialect_insert = postgresql.insert if name == "postgresql" else sqlite.insert
        stmt = dialect_insert(table)
        changing = [c for c in rows[0] if c not in keys]
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys], set_={c: stmt.excluded[c] for c in changing}
        )
        conn.execute(stmt, rows)
        return
    for row in rows:  # any other database: the portable two-step form
        where = and_(*(table.c[k] == row[k] for k in keys))
        if conn.execute(update(table).where(where).values(**row)).rowcount == 0:
            conn.execute(insert(table).values(**row))


def write_cursor(engine: Engine, server_url: str, moment: datetime, now: datetime) -> None:
    with engine.begin() as conn:
        _upsert(
            conn,
            pull_cursors,
            [{"server_url": server_url, "pulled_until": moment, "updated_at": now}],
            ["server_url"],
        )


def _known_patients(engine: Engine, server_url: str) -> dict[str, str]:
    """Server id of every Patient synced to this server -> its case ref."""
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        rows = conn.execute(
            select(synced_resources.c.server_id, synced_resources.c.case_ref, synced_resources.c.identifier)
            .where(synced_resources.c.resource_type == "Patient", synced_resources.c.server_url == server_url)
            .order_by(synced_resources.c.server_id)
        ).all()
    return {r.server_id: r.case_ref for r in rows if str(r.identifier).endswith("|patient")}


@dataclass
class _Case:
    """What a merge needs of one stored case, read in one transaction."""

    ref: str
    version: int
    status: str
    case: dict[str, Any]
    entries: dict[str, dict[str, Any]]
    """Business identifier -> entry of the current Bundle (Provenance left out), in Bundle order."""
    synced: dict[str, Any]
    """Business identifier -> synced_resources row."""
    pulled: dict[tuple[str, str], Any]
    """(type, server id) -> pulled_resources row."""
    history: dict[int, dict[str, dict[str, Any]]]
    """Recent versions' entries (by business identifier), the current one included."""
    settled: frozenset[tuple[str, str, str]] = frozenset()
    """(type, server id, server version) of conflicts an operator resolved (``service.sync.resolve``):
    decided, so not merged or recorded again."""


def _entries(bundle_json: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in orjson.loads(bundle_json).get("entry", []):
        value = business(entry["resource"])
        if value is not None and entry["resource"]["resourceType"] not in NOT_DATA:
            out[value] = entry
    return out


def load_case(engine: Engine, server_url: str, ref: str) -> _Case | None:
    """What a merge of ``ref`` needs, read in one transaction (None when the case is not stored)."""
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        row = store.find(conn, ref)
        if row is None:
            return None
        versions = {
            v.version: v
            for v in store.history(conn, ref)[:VERSIONS_CHECKED]  # newest first
        }
        synced = {
            r.identifier: r
            for r in conn.execute(
                select(synced_resources).where(
                    synced_resources.c.case_ref == ref, synced_resources.c.server_url == server_url
                )
            )
        }
        pulled = {
            (r.resource_type, r.server_id): r
            for r in conn.execute(
                select(pulled_resources).where(
                    pulled_resources.c.case_ref == ref, pulled_resources.c.server_url == server_url
                )
            )
        }
        settled = frozenset(
            (r.resource_type, r.server_id, r.server_version)
            for r in conn.execute(
                select(
                    pull_conflicts.c.resource_type,
                    pull_conflicts.c.server_id,
                    pull_conflicts.c.server_version,
                ).where(
                    pull_conflicts.c.case_ref == ref,
                    pull_conflicts.c.server_url == server_url,
                    pull_conflicts.c.resolved_at.is_not(None),
                )
            )
        )
        wanted = {r.case_version for r in synced.values()} | {r.case_version for r in pulled.values()}
        for number in wanted - set(versions):
            old = store.find_version(conn, ref, number)
            if old is not None:
                versions[number] = old
    current = versions[row.version]
    return _Case(
        ref=ref,
        version=row.version,
        status=current.status,
        case=orjson.loads(current.case_json),
        entries=_entries(current.bundle_json),
        synced=synced,
        pulled=pulled,
        history={n: _entries(v.bundle_json) for n, v in versions.items()},
        settled=settled,
    )


# ---- turning server resources into Bundle entries ----------------------------------------------------


def _rewrite(node: Any, targets: Mapping[str, str]) -> Any:
    """References to server resources (``Type/id``, absolute, with ``_history``) -> their full URLs."""
    if isinstance(node, list):
        return [_rewrite(item, targets) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _rewrite(v, targets) for k, v in node.items()}
    ref = out.get("reference")
    if isinstance(ref, str) and not ref.startswith("urn:"):
        parts = ref.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2 and "/".join(parts[-2:]) in targets:
            out["reference"] = targets["/".join(parts[-2:])]
    return out


def _clean(resource: dict[str, Any], targets: Mapping[str, str], *, keep_id: bool = False) -> dict[str, Any]:
    """A server resource without its server bookkeeping, its references pointing into the Bundle."""
    out: dict[str, Any] = _rewrite(copy.deepcopy(resource), targets)
    if not keep_id:
        out.pop("id", None)
    meta = {k: v for k, v in (out.get("meta") or {}).items() if k not in _SERVER_META}
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


def strip_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """A server resource without its server bookkeeping (references left as they are)."""
    return _clean(resource, {})


def _key(value: str) -> str:
    return split_identifier(value)[2]


def _sort_tokens(tokens: Sequence[str | int]) -> list[tuple[int, int, str]]:
    return [(0, t, "") if isinstance(t, int) else (1, 0, t) for t in tokens]


def _retarget(node: Any, urls: Mapping[str, str]) -> Any:
    if isinstance(node, list):
        return [_retarget(item, urls) for item in node]
    if isinstance(node, dict):
        out = {k: _retarget(v, urls) for k, v in node.items()}
        if isinstance(out.get("reference"), str) and out["reference"] in urls:
            out["reference"] = urls[out["reference"]]
        return out
    return node


@dataclass
class _Recognised:
    """Plain resources placed in the stored case: input position -> (business identifier, entry)."""

    placed: dict[int, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    ignored: int = 0


def _recognise(
    case: dict[str, Any],
    context: dict[str, dict[str, Any]],
    plain: list[dict[str, Any]],
    server_url: str,
) -> _Recognised:
    """Place ``plain`` (references already pointing into the Bundle) among the ``context`` entries and
    translate their element keys into the stored case's (see the module doc, step 3)."""
    stored = list(context.items())
    entries = [{"fullUrl": e["fullUrl"], "resource": e["resource"]} for _, e in stored]
    entries += [{"fullUrl": f"{server_url}/{r['resourceType']}/{r['id']}", "resource": r} for r in plain]
    collection = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    profiled = profile_bundle(collection, source_system=case["source_system"], case_id=case["case_id"])
    by_url = {e["fullUrl"]: e for e in profiled.bundle["entry"]}

    def new_key(position: int) -> str | None:
        url = profiled.placed.get(position)
        value = business(by_url[url]["resource"]) if url in by_url else None
        return _key(value) if value else None

    def item(key: str) -> tuple[str | int, ...]:
        return tuple(case_tokens(key.split("#", 1)[0]))

    items: dict[tuple[str | int, ...], tuple[str | int, ...]] = {}
    urls: dict[str, str] = {}
    for position, (value, entry) in enumerate(stored):
        key = new_key(position)
        if key is None:
            continue
        urls[profiled.placed[position]] = entry["fullUrl"]
        new, old = item(key), item(_key(value))
        if len(new) == len(old):
            for j, token in enumerate(new):
                if isinstance(token, int):
                    items.setdefault(new[: j + 1], old[: j + 1])
    counts: dict[tuple[str | int, ...], int] = {}

    def translate(tokens: tuple[str | int, ...]) -> tuple[str | int, ...]:
        out: tuple[str | int, ...] = ()
        for j, token in enumerate(tokens):
            if not isinstance(token, int):
                out = (*out, token)
                continue
            prefix = tokens[: j + 1]
            found = items.get(prefix)
            if found is None:  # a new list item: after the stored ones
                if out not in counts:
                    existing = case_get(case, list(out))
                    counts[out] = len(existing) if isinstance(existing, list) else 0
                found = (*out, counts[out])
                counts[out] += 1
                items[prefix] = found
            out = found
        return out

    result = _Recognised()
    mine = []
    for k in range(len(plain)):
        key = new_key(len(stored) + k)
        if key is None:
            result.ignored += 1
        else:
            mine.append((_sort_tokens(item(key)), k, key))
    ids = {"source_system": case["source_system"], "case_id": case["case_id"]}
    for _order, k, key in sorted(mine):
        _, _, suffix = key.partition("#")
        value = identifier_value(
            ids, case_path(list(translate(item(key)))) + (f"#{suffix}" if suffix else "")
        )
        urls[profiled.placed[len(stored) + k]] = full_url(value)
        result.placed[k] = (value, {})
    for k, (value, _) in result.placed.items():
        resource = copy.deepcopy(by_url[profiled.placed[len(stored) + k]]["resource"])
        resource["identifier"][0]["value"] = value
        result.placed[k] = (value, {"fullUrl": full_url(value), "resource": _retarget(resource, urls)})
    return result


# ---- one case -----------------------------------------------------------------------------------------


@dataclass
class _Found:
    """One pulled resource of a case and what the merge made of it."""

    resource: dict[str, Any]
    identifier: str | None = None
    """Our business identifier: carried (profiled) or given by recognition (plain)."""
    entry: dict[str, Any] | None = None


@dataclass
class _Outcome:
    accepted: Accepted | None = None
    merged: list[_Found] = field(default_factory=list)
    """Resources whose server version the case now holds (recorded in pulled_resources)."""
    conflicts: list[tuple[_Found, str]] = field(default_factory=list)
    denied: list[tuple[_Found, str]] = field(default_factory=list)
    """Server resources whose status denies the element they look like (``mappings/negations.yaml``):
    never merged, recorded as rejected with the rule."""
    ignored: int = 0


def contact_at_visits(case: dict[str, Any]) -> dict[str, Any]:
    """A follow-up visit is a contact: a visit pulled from the server that is certainly after the stored
    last contact date moves the last contact to the visit's date (at the visit's precision). An EHR adds
    visits without touching the registry's vital-status record; without this the rule "a follow-up is
    not after the last contact" would reject every such pull. The intervals recorded for the earlier
    contact go with it (kept, they would contradict the new date). Nothing else is inferred."""
    outcome = case.get("outcome") or {}
    last = outcome.get("last_contact")
    if not isinstance(last, str) or not dates.known(last):
        return case
    later = [
        fu["date"]
        for fu in case.get("follow_up", [])
        if isinstance(fu.get("date"), str)
        and dates.known(fu["date"])
        and dates.certainly_before(last, fu["date"])
    ]
    if not later:
        return case
    latest = max(later, key=lambda d: dates.parse(d).latest)
    # the recorded intervals described the earlier contact: kept, they would contradict the new one
    moved = {
        "last_contact": latest,
        "last_contact_months_after_diagnosis": None,
        "last_contact_months_after_surgery": None,
    }
    return {**case, "outcome": {**outcome, **moved}}


def _unmap(entries: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": list(entries.values())}
    return unmap_bundle(bundle, contact_at_visits)


def _canonical(current: Mapping[str, dict[str, Any]], value: str, entry: dict[str, Any]) -> Any:
    """The entry ``value`` maps to when ``entry`` replaces it in ``current`` (None if it does not map)."""
    try:
        case = _unmap({**current, value: entry})
        bundle = case_to_bundle(case, now=_CANON_NOW)
    except (MappingError, CaseFileError, ServiceError):
        return None
    return next((e["resource"] for e in bundle["entry"] if business(e["resource"]) == value), None)


def _denied(resource: dict[str, Any], entry: dict[str, Any]) -> str:
    """Why ``resource`` may not be read as the element ``entry`` places it as (empty: it may), with the
    same rules as ``POST /fhir`` (a surgery not done, a diagnosis unconfirmed, an unknown modifier)."""
    template = profiled_template(entry["resource"])
    return "; ".join(f"{d.path}: {d.rule}" for d in denials(resource, template))


class Merge:
    def __init__(
        self, stored: _Case, server_url: str, accept: frozenset[tuple[str, str]] = frozenset()
    ) -> None:
        """``accept``: (type, server id) of resources an operator chose to take from the server
        (``service.sync.resolve``): merged as if the service had not changed their element."""
        self.stored = stored
        self.server_url = server_url
        self.accept = accept
        self.targets: dict[str, str] = {}
        for value, row in stored.synced.items():
            if "|" in value:
                self.targets[f"{row.resource_type}/{row.server_id}"] = full_url(value)
        for (rtype, server_id), row in stored.pulled.items():
            self.targets[f"{rtype}/{server_id}"] = full_url(row.identifier)

    def as_merged(self, resource: dict[str, Any]) -> dict[str, Any]:
        """A server resource as the merge would hold it: no server bookkeeping, references pointing
        into the case's Bundle (what the console compares with the service's entry)."""
        return _clean(resource, self.targets)

    def baseline(self, value: str, found: _Found) -> int | None:
        """The last case version the server and the service agreed on for this element."""
        numbers = []
        row = self.stored.synced.get(value)
        if row is not None:
            numbers.append(row.case_version)
        pulled = self.stored.pulled.get(_name(found.resource))
        if pulled is not None:
            numbers.append(pulled.case_version)
        return max(numbers, default=None)

    def locally_changed(self, value: str, since: int | None) -> bool:
        current = self.stored.entries.get(value)
        if since is None:
            return current is not None
        before = self.stored.history.get(since)
        if before is None:
            return True  # the version is gone from the checked history: assume it changed
        old = before.get(value)
        return (old["resource"] if old else None) != (current["resource"] if current else None)

    def ours(self, value: str, entry: dict[str, Any], since: int | None) -> bool:
        """Whether the server's element maps to what a version of the service since ``since`` holds."""
        canonical = _canonical(self.stored.entries, value, entry)
        if canonical is None:
            return False
        return any(
            (held := entries.get(value)) is not None and held["resource"] == canonical
            for number, entries in self.stored.history.items()
            if since is None or number > since
        )

    def decide(self, found: _Found, value: str, entry: dict[str, Any], out: _Outcome) -> bool:
        """True if the entry is to be merged; a conflict or the service's own write is noted in ``out``."""
        found.identifier, found.entry = value, entry
        denied = _denied(found.resource, entry)
        if denied:  # not even an operator's "take the server's" merges a fact the record denies
            out.denied.append((found, denied))
            return False
        if _name(found.resource) in self.accept:
            return True
        since = self.baseline(value, found)
        if not self.locally_changed(value, since):
            return True
        if self.ours(value, entry, since):
            out.merged.append(found)  # the server holds what the service holds: recorded, nothing to merge
            return False
        version = _version(found.resource) or "?"
        reason = (
            f"{found.resource.get('resourceType')} changed on the server (version {version}) and in the "
            f"service since case version {since if since is not None else '(never synced)'} "
            f"(now v{self.stored.version})"
        )
        out.conflicts.append((found, reason))
        return False

    def run(
        self, profiled: list[dict[str, Any]], plain: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], _Outcome]:
        out = _Outcome()
        stored = self.stored
        for resource in profiled:
            value = business(resource)
            assert value is not None
            self.targets[f"{resource['resourceType']}/{resource['id']}"] = full_url(value)
        overlays: dict[str, dict[str, Any]] = {}
        for resource in profiled:
            if self.known(resource):
                continue
            value = business(resource)
            assert value is not None
            found = _Found(resource)
            entry: dict[str, Any] = {"fullUrl": full_url(value), "resource": _clean(resource, self.targets)}
            if self.decide(found, value, entry, out):
                overlays[value] = entry
                out.merged.append(found)
        fresh = [r for r in plain if not self.known(r)]
        if fresh:
            # A plain resource merged before and changed since replaces what it became (its element
            # keeps its key); it is recognised without its old self in the context.
            again = {
                k: stored.pulled[_name(r)].identifier
                for k, r in enumerate(fresh)
                if _name(r) in stored.pulled
            }
            context = {v: e for v, e in {**stored.entries, **overlays}.items() if v not in again.values()}
            cleaned = [_clean(r, self.targets, keep_id=True) for r in fresh]
            recognised = _recognise(stored.case, context, cleaned, self.server_url)
            out.ignored += recognised.ignored
            for k, (value, entry) in sorted(recognised.placed.items()):
                if k in again:
                    value = again[k]
                    moved: dict[str, Any] = entry["resource"]
                    moved["identifier"][0]["value"] = value
                    entry = {"fullUrl": full_url(value), "resource": moved}
                found = _Found(fresh[k])
                if value in overlays:
                    out.ignored += 1  # two pulled resources for one element: the first one wins
                    continue
                if self.decide(found, value, entry, out):
                    overlays[value] = entry
                    out.merged.append(found)
        merged = {**stored.entries, **overlays}
        return _unmap(merged) if overlays else stored.case, out

    def known(self, resource: dict[str, Any]) -> bool:
        """The server version is the one the worker wrote or the pull merged before."""
        rtype, server_id = _name(resource)
        version = _version(resource)
        value = business(resource)
        row = self.stored.synced.get(value) if value else None
        if row is not None and row.server_id == server_id and (row.server_version or "") == version:
            return True
        pulled = self.stored.pulled.get((rtype, server_id))
        if pulled is not None and (pulled.server_version or "") == version:
            return True
        # a conflict being resolved ("theirs") is claimed, so settled: the resolver still merges it
        return (rtype, server_id) not in self.accept and (rtype, server_id, version) in self.stored.settled


def merge_and_store(
    intake: Intake, merge: Merge, profiled: list[dict[str, Any]], plain: list[dict[str, Any]], author: str
) -> _Outcome:
    """One merge into ``merge.stored``, stored as a new version through ``Intake.update`` with ``If-Match``
    (steps 2-4 of the module doc). Raises PreconditionFailed or Conflict when the case changed meanwhile
    (merge again), MappingError, CaseFileError or ServiceError when the merged case is rejected."""
    stored = merge.stored
    case, outcome = merge.run(profiled, plain)
    if outcome.merged and case is not stored.case:
        prepared = intake.prepare_valid(validate_case(contact_at_visits(case)))
        outcome.accepted = intake.update(stored.ref, prepared, author, if_match=stored.version)
    return outcome


def record_merged(
    conn: Connection, server_url: str, ref: str, version: int, merged: Sequence[_Found], now: datetime
) -> None:
    """The server versions case ``version`` now holds (``pulled_resources``); an open conflict of each
    merged resource is settled by it."""
    rows = [
        {
            "server_url": server_url,
            "resource_type": f.resource["resourceType"],
            "server_id": str(f.resource["id"]),
            "server_version": _version(f.resource) or None,
            "case_ref": ref,
            "identifier": f.identifier,
            "case_version": version,
            "pulled_at": now,
        }
        for f in merged
        if f.identifier is not None
    ]
    _upsert(conn, pulled_resources, rows, ["server_url", "resource_type", "server_id"])
    for f in merged:
        conn.execute(
            update(pull_conflicts)
            .where(
                pull_conflicts.c.server_url == server_url,
                pull_conflicts.c.resource_type == f.resource["resourceType"],
                pull_conflicts.c.server_id == str(f.resource["id"]),
                pull_conflicts.c.resolved_at.is_(None),
            )
            .values(resolved_at=now)
        )


# ---- the pull -------------------------------------------------------------------------------------


class Puller:
    def __init__(
        self,
        engine: Engine,
        client: FhirClient,
        intake: Intake,
        *,
        clock: Callable[[], datetime] = utcnow,
        author: str = AUTHOR,
    ) -> None:
        self.engine = engine
        self.client = client
        self.intake = intake
        self.clock = clock
        self.author = author
        self.server_url = client.base_url

    def run(self, since: datetime | None = None) -> PullReport:
        """One pull; ``since`` overrides the stored cursor. FhirError propagates (the cursor stays)."""
        started = self.clock()
        if since is None:
            cursor = read_cursor(self.engine, self.server_url)
            since = cursor - timedelta(seconds=OVERLAP_S) if cursor is not None else None
        report = PullReport(self.server_url, since)
        fetched = self._fetch(since)
        report.fetched = len(fetched)
        patients = _known_patients(self.engine, self.server_url)
        groups: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for resource in fetched.values():
            value = business(resource)
            if value is not None:
                try:
                    source, case_id, _ = split_identifier(value)
                except MappingError:
                    report.ignored += 1
                    continue
                groups.setdefault(store.case_ref(source, case_id), ([], []))[0].append(resource)
            elif (patient := _patient_of(resource)) in patients:
                assert patient is not None
                groups.setdefault(patients[patient], ([], []))[1].append(resource)
            else:
                report.ignored += 1
        report.cases = len(groups)
        for ref in sorted(groups):
            profiled, plain = groups[ref]
            try:
                self._case(ref, profiled, plain, report)
            except Exception as exc:  # a defect or the database: logged by type, retried next pull
                report.failed += 1
                log.error("pull: case %s failed: %s", ref, type(exc).__name__)
        if not report.failed:
            write_cursor(self.engine, self.server_url, started, self.clock())
            report.cursor = started
        log.info("pull from the FHIR server: %s", report.summary())
        return report

    def _fetch(self, since: datetime | None) -> dict[tuple[str, str], dict[str, Any]]:
        after = {"_lastUpdated": f"gt{instant(since)}"} if since is not None else {}
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for rtype in resource_types():
            for resource in search(self.client, rtype, {"identifier": f"{IDENTIFIER_SYSTEM}|", **after}):
                found[_name(resource)] = resource
        patients = sorted(_known_patients(self.engine, self.server_url))
        for rtype, param in patient_params():
            for start in range(0, len(patients), PATIENTS_PER_SEARCH):
                chunk = patients[start : start + PATIENTS_PER_SEARCH]
                refs = ",".join(f"Patient/{p}" for p in chunk)
                for resource in search(self.client, rtype, {param: refs, **after}):
                    found.setdefault(_name(resource), resource)
        return {k: r for k, r in found.items() if r.get("resourceType") not in NOT_DATA}

    def _case(
        self, ref: str, profiled: list[dict[str, Any]], plain: list[dict[str, Any]], report: PullReport
    ) -> None:
        for _attempt in range(3):
            stored = load_case(self.engine, self.server_url, ref)
            if stored is None:
                self._new_case(ref, profiled, report)
                return
            if stored.status != ACTIVE:
                log.info(
                    "pull: case %s is withdrawn; %d pulled resources left", ref, len(profiled) + len(plain)
                )
                report.ignored += len(profiled) + len(plain)
                return
            merge = Merge(stored, self.server_url)
            try:
                outcome = merge_and_store(self.intake, merge, profiled, plain, self.author)
            except (PreconditionFailed, Conflict):
                continue  # the case changed while it was merged: merge again on the new version
            except (MappingError, CaseFileError, ServiceError) as error:
                unknown = [r for r in (*profiled, *plain) if not merge.known(r)]
                self._reject(ref, stored.version, unknown, error, report)
                return
            self._record(ref, stored.version, outcome, report)
            return
        raise RuntimeError("the case kept changing while pulled resources were merged")

    def _new_case(self, ref: str, profiled: list[dict[str, Any]], report: PullReport) -> None:
        """A case the service does not have (synced by another installation): all of it, from its Patient."""
        value = business(profiled[0])
        assert value is not None
        source, case_id, _ = split_identifier(value)
        patient_value = identifier_value({"source_system": source, "case_id": case_id}, "patient")
        resources: dict[tuple[str, str], dict[str, Any]] = {_name(r): r for r in profiled}
        patients = list(
            search(self.client, "Patient", {"identifier": f"{IDENTIFIER_SYSTEM}|{patient_value}"})
        )
        for patient in patients[:1]:
            resources[_name(patient)] = patient
            for rtype, param in patient_params():
                for resource in search(self.client, rtype, {param: f"Patient/{patient['id']}"}):
                    found = business(resource)
                    if found is not None and found.rsplit("|", 1)[0] == value.rsplit("|", 1)[0]:
                        resources[_name(resource)] = resource
        mine = [r for r in resources.values() if r.get("resourceType") not in NOT_DATA and business(r)]
        if withdrawn(mine):
            log.info("pull: case %s was withdrawn on the server; %d resources left", ref, len(mine))
            report.ignored += len(mine)
            return
        denied = [(r, business(r), why[:2000]) for r in mine if (why := _denied(r, {"resource": r}))]
        if denied:
            report.rejected += 1
            with self.engine.begin() as conn:
                self._conflicts(conn, ref, None, denied, REJECTED, self.clock())
            log.warning("pull: case %s not imported: %d denied resources", ref, len(denied))
            return
        targets = {f"{r['resourceType']}/{r['id']}": full_url(str(business(r))) for r in mine}
        entries = {
            str(business(r)): {
                "fullUrl": targets[f"{r['resourceType']}/{r['id']}"],
                "resource": _clean(r, targets),
            }
            for r in mine
        }
        try:
            prepared = self.intake.prepare_valid(_unmap(entries))
            (accepted,) = self.intake.submit_many([prepared], self.author)
        except (MappingError, CaseFileError, ServiceError) as error:
            self._reject(ref, None, mine, error, report)
            return
        outcome = _Outcome(accepted, [_Found(r, business(r)) for r in mine])
        self._record(ref, None, outcome, report)

    def _record(self, ref: str, base_version: int | None, outcome: _Outcome, report: PullReport) -> None:
        now = self.clock()
        accepted = outcome.accepted
        if accepted is None:
            report.unchanged += 1
        elif accepted.created:
            report.created += 1
        elif accepted.changed:
            report.changed += 1
        else:
            report.unchanged += 1
        report.ignored += outcome.ignored
        report.conflicts += len(outcome.conflicts)
        report.rejected += bool(outcome.denied)
        version = accepted.version.version if accepted is not None else base_version
        with self.engine.begin() as conn:
            if version is not None:
                record_merged(conn, self.server_url, ref, version, outcome.merged, now)
            for found, kind in ((outcome.conflicts, CONFLICT), (outcome.denied, REJECTED)):
                rows = [(f.resource, f.identifier, r[:2000]) for f, r in found]
                self._conflicts(conn, ref, base_version, rows, kind, now)
        if outcome.conflicts or outcome.denied:
            log.warning(
                "pull: case %s: %d conflicts, %d denied resources recorded",
                ref,
                len(outcome.conflicts),
                len(outcome.denied),
            )
        if accepted is not None and accepted.changed:
            log.info(
                "pull: case %s v%d stored (%d resources merged)",
                ref,
                accepted.version.version,
                len(outcome.merged),
            )

    def _reject(
        self,
        ref: str,
        version: int | None,
        resources: list[dict[str, Any]],
        error: Exception,
        report: PullReport,
    ) -> None:
        if isinstance(error, ServiceError):
            reason = "; ".join(f"{i.code} @ {i.expression or '-'}" for i in error.issues[:20])
        elif isinstance(error, SharedDateConflict):  # the rule and the elements, not the dates
            elements = f"{error.first.element} and {error.second.element}"
            reason = f"{error.rule} ({error.case_path}: {elements} of two resources disagree)"
        else:
            reason = type(error).__name__  # mapping messages may quote values
        reason = f"the merged case was rejected: {reason}"[:2000]
        report.rejected += 1
        with self.engine.begin() as conn:
            self._conflicts(
                conn, ref, version, [(r, business(r), reason) for r in resources], REJECTED, self.clock()
            )
        log.warning("pull: case %s rejected (%d resources)", ref, len(resources))

    def _conflicts(
        self,
        conn: Connection,
        ref: str,
        version: int | None,
        found: list[tuple[dict[str, Any], str | None, str]],
        kind: str,
        now: datetime,
    ) -> None:
        rows = [
            {
                "server_url": self.server_url,
                "kind": kind,
                "case_ref": ref,
                "identifier": identifier,
                "resource_type": resource["resourceType"],
                "server_id": str(resource["id"]),
                "server_version": _version(resource),
                "case_version": version,
                "reason": reason,
                "resource_json": orjson.dumps(resource).decode(),
                "detected_at": now,
            }
            for resource, identifier, reason in found
        ]
        if not rows:
            return
        keys = ("server_url", "resource_type", "server_id", "server_version")
        name = conn.dialect.name
        if name in ("postgresql", "sqlite"):
            dialect_insert = postgresql.insert if name == "postgresql" else sqlite.insert
            conn.execute(
                dialect_insert(pull_conflicts).on_conflict_do_nothing(index_elements=list(keys)), rows
            )
            return
        for row in rows:
            where = and_(*(pull_conflicts.c[k] == row[k] for k in keys))
            if conn.execute(select(pull_conflicts.c.id).where(where)).first() is None:
                conn.execute(insert(pull_conflicts).values(**row))


def pull(
    engine: Engine,
    client: FhirClient,
    intake: Intake,
    *,
    since: datetime | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> PullReport:
    """One pull from ``client``'s server into the stored cases (see the module doc)."""
    return Puller(engine, client, intake, clock=clock).run(since)
