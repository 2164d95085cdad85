"""``ivclms sync verify``: does the FHIR server still hold what was synced?

For each case with a delivered version, every resource of that version's stored Bundle is read back
from the server (by the id the server gave it) and compared with what was sent: the content elements
only (``id``, ``meta.versionId``/``lastUpdated``/``source`` and ``text`` are the server's), with the
Bundle's ``urn:uuid`` references replaced by the server ids they resolved to. Findings name the
resource and the element paths that differ, never values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, and_, func, select

from service.db import READ_ONLY
from service.fhir.client import FhirClient, FhirNotFound
from service.store.tables import case_versions, synced_resources
from service.store.tables import outbox as table
from service.sync import outbox
from service.sync.bundles import entry_key

MISSING = "missing"
"""Synced, but the server no longer has it (404/410)."""
DRIFTED = "drifted"
"""The server's content differs from what was sent (changed by someone else, or lost an update)."""
UNRECORDED = "unrecorded"
"""In the delivered Bundle but no server id was recorded (the answer had no usable location)."""
ORPHANED = "orphaned"
"""Synced from an older version and absent from the newest delivered one (an element removed from the
case): still on the server, since sync never deletes. Reported, not counted as drift."""

SERVER_META = ("versionId", "lastUpdated", "source")


@dataclass(frozen=True)
class Finding:
    kind: str
    case_ref: str
    case_version: int
    resource: str
    """``Type/server-id``, or the business identifier when no server id is known."""
    paths: tuple[str, ...] = ()


@dataclass
class Report:
    cases: int = 0
    checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def drift(self) -> bool:
        return any(f.kind != ORPHANED for f in self.findings)

    def count(self, kind: str) -> int:
        return sum(f.kind == kind for f in self.findings)


def content(resource: dict[str, Any]) -> dict[str, Any]:
    """The elements that carry data: what the server assigns or generates removed."""
    out = {k: v for k, v in resource.items() if k not in ("id", "text")}
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in SERVER_META}
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out


def resolve_references(value: Any, targets: dict[str, str]) -> Any:
    """``reference`` values that are Bundle fullUrls replaced by the server's ``Type/id``."""
    if isinstance(value, dict):
        return {
            k: targets.get(v, v)
            if k == "reference" and isinstance(v, str)
            else resolve_references(v, targets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [resolve_references(v, targets) for v in value]
    return value


def differences(expected: Any, actual: Any, path: str = "") -> Iterator[str]:
    """Paths (``component[1].valueQuantity.value``) where two JSON values differ."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual), key=str):
            yield from differences(expected.get(key), actual.get(key), f"{path}.{key}" if path else key)
    elif isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            yield from differences(e, a, f"{path}[{i}]")
    elif expected != actual:
        yield path or "(resource)"


def verify(engine: Engine, client: FhirClient, *, case_ref: str | None = None, max_paths: int = 10) -> Report:
    """Compare the server with the newest delivered version of every case (or of ``case_ref``)."""
    report = Report()
    for ref, version, bundle, rows in _delivered(engine, client.base_url, case_ref):
        report.cases += 1
        by_key = {r.identifier: r for r in rows}
        targets = {
            e["fullUrl"]: f"{by_key[k].resource_type}/{by_key[k].server_id}"
            for e in bundle.get("entry", [])
            if "fullUrl" in e and (k := entry_key(e)) in by_key
        }
        in_bundle: set[str] = set()
        for entry in bundle.get("entry", []):
            key = entry_key(entry)
            in_bundle.add(key)
            row = by_key.get(key)
            if row is None:
                report.findings.append(Finding(UNRECORDED, ref, version, key))
                continue
            name = f"{row.resource_type}/{row.server_id}"
            report.checked += 1
            try:
                actual = client.read(row.resource_type, row.server_id)
            except FhirNotFound:
                report.findings.append(Finding(MISSING, ref, version, name))
                continue
            expected = content(resolve_references(entry["resource"], targets))
            paths = tuple(differences(expected, content(actual)))
            if paths:
                report.findings.append(Finding(DRIFTED, ref, version, name, paths[:max_paths]))
        for row in rows:
            if row.identifier not in in_bundle:
                report.findings.append(
                    Finding(ORPHANED, ref, row.case_version, f"{row.resource_type}/{row.server_id}")
                )
    return report


def _delivered(
    engine: Engine, server_url: str, case_ref: str | None
) -> Iterator[tuple[str, int, dict[str, Any], list[Any]]]:
    """(case ref, newest version done for this server, its Bundle, the case's synced_resources rows of
    this server), case by case."""
    newest = select(table.c.case_ref, func.max(table.c.version).label("version")).where(
        table.c.state == outbox.DONE, table.c.server_url == server_url
    )
    if case_ref is not None:
        newest = newest.where(table.c.case_ref == case_ref)
    done = newest.group_by(table.c.case_ref).subquery()
    query = (
        select(done.c.case_ref, done.c.version, case_versions.c.bundle_json)
        .join(
            case_versions,
            and_(case_versions.c.case_ref == done.c.case_ref, case_versions.c.version == done.c.version),
        )
        .order_by(done.c.case_ref)
    )
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        cases = conn.execute(query).all()
    for ref, version, bundle_json in cases:
        with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            rows = conn.execute(
                select(synced_resources).where(
                    synced_resources.c.case_ref == ref, synced_resources.c.server_url == server_url
                )
            ).all()
        yield ref, version, orjson.loads(bundle_json), list(rows)
