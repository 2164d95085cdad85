"""What an operator needs about the queue: depth per state, how long the oldest change has waited,
the dead letters with the server's reasons, and retrying one after the cause is fixed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, func, select

from service.db import READ_ONLY
from service.errors import Conflict, NotFound
from service.store.tables import outbox as table
from service.sync import outbox
from service.sync.worker import utcnow


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
class SyncStatus:
    depth: dict[str, int]
    """Entries per state, every state present (zero included)."""
    oldest_pending_age_s: float | None
    """Age of the oldest change not yet delivered (``pending`` or ``sending``); None when none waits."""
    dead: list[DeadEntry]

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
        }


def status(engine: Engine, *, now: datetime | None = None, dead_limit: int = 100) -> SyncStatus:
    """``dead_limit`` bounds the listed dead entries (oldest first); ``depth`` counts all of them."""
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
    )


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
