"""What an operator needs about the queue: depth per state, how long the oldest change has waited,
the dead letters with the server's reasons, and retrying one after the cause is fixed; of the pull
(``service.sync.pull``): the open conflicts and rejections, and each server's cursor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from service.clock import utcnow
from service.db import READ_ONLY
from service.errors import Conflict, NotFound
from service.store.pull_tables import pull_conflicts, pull_cursors
from service.store.tables import cases as cases_table
from service.store.tables import outbox as table
from service.sync import outbox


@dataclass(frozen=True)
class DeadEntry:
    id: int
    case_ref: str
    version: int
    attempts: int
    last_error: str | None
    outcome: dict[str, Any] | None
    """The server's OperationOutcome as stored; its diagnostics may quote submitted values."""
    created_at: datetime


@dataclass(frozen=True)
class PullConflict:
    """A server change the pull did not merge: ``conflict`` (the service changed the element too) or
    ``rejected`` (the merged case failed the mapping or validation)."""

    id: int
    kind: str
    server_url: str
    case_ref: str | None
    identifier: str | None
    resource_type: str
    server_id: str
    server_version: str
    case_version: int | None
    reason: str
    resource: dict[str, Any]
    """The server's resource as pulled (patient data: shown to callers with a Patient read scope)."""
    detected_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "case_ref": self.case_ref,
            "identifier": self.identifier,
            "resource": f"{self.resource_type}/{self.server_id}",
            "server_version": self.server_version,
            "case_version": self.case_version,
            "reason": self.reason,
            "server_resource": self.resource,
            "detected_at": self.detected_at.isoformat(),
        }


@dataclass(frozen=True)
class SyncStatus:
    depth: dict[str, int]
    """Entries per state, every state present (zero included)."""
    oldest_pending_age_s: float | None
    """Age of the oldest change not yet delivered (``pending`` or ``sending``); None when none waits."""
    dead: list[DeadEntry]
    conflicts: list[PullConflict] = field(default_factory=list)
    """Open pull conflicts and rejections, oldest first."""
    pulled_until: dict[str, datetime] = field(default_factory=dict)
    """Server URL -> the cursor of its last successful pull."""

    def as_json(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "dead": [
                {
                    "id": d.id,
                    "case_ref": d.case_ref,
                    "version": d.version,
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                    "outcome": d.outcome,
                    "created_at": d.created_at.isoformat(),
                }
                for d in self.dead
            ],
            "conflicts": [c.as_json() for c in self.conflicts],
            "pulled_until": {url: moment.isoformat() for url, moment in self.pulled_until.items()},
        }


def status(
    engine: Engine, *, now: datetime | None = None, dead_limit: int = 100, conflict_limit: int = 100
) -> SyncStatus:
    """``dead_limit`` bounds the listed dead entries (oldest first); ``depth`` counts all of them.
    ``conflict_limit`` bounds the listed open pull conflicts likewise."""
    now = now or utcnow()
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        counts: dict[str, int] = {
            state: n for state, n in conn.execute(select(table.c.state, func.count()).group_by(table.c.state))
        }
        oldest = conn.execute(
            select(func.min(table.c.created_at)).where(table.c.state.in_((outbox.PENDING, outbox.SENDING)))
        ).scalar_one_or_none()
        rows = conn.execute(
            select(
                table.c.id,
                table.c.case_ref,
                table.c.version,
                table.c.attempts,
                table.c.last_error,
                table.c.outcome_json,
                table.c.created_at,
            )
            .where(table.c.state == outbox.DEAD)
            .order_by(table.c.id)
            .limit(dead_limit)
        ).all()
        open_conflicts = conn.execute(
            select(pull_conflicts)
            .where(pull_conflicts.c.resolved_at.is_(None))
            .order_by(pull_conflicts.c.id)
            .limit(conflict_limit)
        ).all()
        cursors = conn.execute(select(pull_cursors.c.server_url, pull_cursors.c.pulled_until)).all()
    return SyncStatus(
        depth={state: int(counts.get(state, 0)) for state in outbox.STATES},
        oldest_pending_age_s=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        dead=[
            DeadEntry(
                id=r.id,
                case_ref=r.case_ref,
                version=r.version,
                attempts=r.attempts,
                last_error=r.last_error,
                outcome=orjson.loads(r.outcome_json) if r.outcome_json else None,
                created_at=r.created_at,
            )
            for r in rows
        ],
        conflicts=[
            PullConflict(
                id=c.id,
                kind=c.kind,
                server_url=c.server_url,
                case_ref=c.case_ref,
                identifier=c.identifier,
                resource_type=c.resource_type,
                server_id=c.server_id,
                server_version=c.server_version,
                case_version=c.case_version,
                reason=c.reason,
                resource=orjson.loads(c.resource_json),
                detected_at=c.detected_at,
            )
            for c in open_conflicts
        ],
        pulled_until={c.server_url: c.pulled_until for c in cursors},
    )


def entry_source(engine: Engine, entry_id: int) -> str:
    """The source system of the case an outbox entry sends: retrying it writes that hospital's case to
    the FHIR server, which a client bound to other source systems may not. NotFound for an unknown id."""
    query = (
        select(cases_table.c.source_system)
        .select_from(table.join(cases_table, cases_table.c.id == table.c.case_ref))
        .where(table.c.id == entry_id)
    )
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        found = conn.execute(query).scalar()
    if found is None:
        raise NotFound(f"no outbox entry {entry_id}")
    return str(found)


def retry(engine: Engine, entry_id: int, *, clock: Callable[[], datetime] = utcnow) -> str:
    """Send a dead entry again (after its cause was fixed); returns its new state, ``pending`` or
    ``superseded``. NotFound for an unknown id, Conflict when the entry is not dead."""
    try:
        with engine.begin() as conn:
            return outbox.retry(conn, entry_id, now=clock())
    except outbox.NoSuchEntry:
        raise NotFound(f"no outbox entry {entry_id}") from None
    except outbox.NotDead as exc:
        raise Conflict(f"outbox entry {entry_id} is {exc.state}: only a dead entry can be retried") from None


def retry_all_dead(engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> dict[str, int]:
    """Every dead entry retried (after a fix that concerns them all, e.g. a profile loaded on the server)."""
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        ids = list(conn.execute(select(table.c.id).where(table.c.state == outbox.DEAD)).scalars())
    result: dict[str, int] = {}
    for entry_id in ids:
        try:
            state = retry(engine, entry_id, clock=clock)
        except Conflict:
            continue  # retried concurrently
        result[state] = result.get(state, 0) + 1
    return result
