"""The outbox queue in SQL: claim, finish, reschedule, dead-letter and retry entries.

Every function runs on a connection inside a transaction the caller owns. An entry moves
``pending -> sending -> done``; a failure sends it back to ``pending`` (later) or to ``dead``;
``superseded`` ends an entry whose content a newer version of the same case already carries.

Two rules keep a case's resources on the server equal to its newest version:

* one case, one sender: an entry is never claimed while another entry of its case is being sent
  (``sending`` with a lease that has not run out), so version 2 never overtakes version 1;
* coalescing: each version is a full snapshot of the case (every resource, by conditional update),
  so when several versions wait only the newest is sent and the older ones become ``superseded``.

Claims are made under a row lock on the case (``cases``, ``FOR NO KEY UPDATE SKIP LOCKED`` on
PostgreSQL): two workers never decide about the same case at once, and neither waits for the other.
On SQLite the writer lock that ``BEGIN IMMEDIATE`` takes serialises claims instead.

Entries are per FHIR server (``server_url``): intake queues without one (the server configured when
the entry is sent), a claim stamps the worker's server, and only an entry ``done`` for *that* server
makes an older one superseded. So after a move to another server, ``service.sync.backfill`` can queue
what the new server has not had, and what the old one had does not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from service.store.tables import case_versions, cases, outbox, synced_resources

PENDING = "pending"
SENDING = "sending"
DONE = "done"
DEAD = "dead"
SUPERSEDED = "superseded"
STATES = (PENDING, SENDING, DONE, DEAD, SUPERSEDED)


@dataclass(frozen=True)
class Claim:
    """An entry this worker now holds until ``lease_until``."""

    id: int
    case_ref: str
    version: int
    attempts: int
    server_url: str
    """The server the claim is for (the worker's ``FhirClient.base_url``)."""


@dataclass(frozen=True)
class Synced:
    """Where one resource of a sent bundle lives on the server."""

    identifier: str
    """The business identifier value, or ``Type/id`` for a resource addressed by id (Provenance)."""
    resource_type: str
    server_id: str
    server_version: str | None


def _due(now: datetime) -> Any:
    """Waiting and due, or held by a worker whose lease ran out (crashed or stuck)."""
    return or_(
        and_(outbox.c.state == PENDING, outbox.c.next_attempt_at <= now),
        and_(outbox.c.state == SENDING, outbox.c.lease_until < now),
    )


def claim(
    conn: Connection, *, worker_id: str, now: datetime, lease_s: float, limit: int, server_url: str
) -> list[Claim]:
    """Claim the newest due entry of up to ``limit`` cases, oldest waiting case first, for ``server_url``."""
    busy = outbox.alias("busy")
    in_flight = exists().where(
        busy.c.case_ref == outbox.c.case_ref, busy.c.state == SENDING, busy.c.lease_until >= now
    )
    refs = list(
        conn.execute(
            select(outbox.c.case_ref)
            .where(_due(now), ~in_flight)
            .group_by(outbox.c.case_ref)
            .order_by(func.min(outbox.c.id))
            .limit(limit)
        ).scalars()
    )
    if not refs:
        return []
    # The case row is the lock that makes one worker at a time decide about a case; a case another
    # worker (or an intake writing a new version) holds is skipped now and found on the next round.
    locked = set(
        conn.execute(
            select(cases.c.id).where(cases.c.id.in_(refs)).with_for_update(skip_locked=True, key_share=True)
        ).scalars()
    )
    if not locked:
        return []
    # Read again after locking: under READ COMMITTED this statement sees every claim committed so far.
    open_rows = conn.execute(
        select(
            outbox.c.id,
            outbox.c.case_ref,
            outbox.c.version,
            outbox.c.state,
            outbox.c.attempts,
            outbox.c.next_attempt_at,
            outbox.c.lease_until,
        )
        .where(outbox.c.case_ref.in_(locked), outbox.c.state.in_((PENDING, SENDING)))
        .order_by(outbox.c.version, outbox.c.id)
    ).all()
    # (version, entry id) of the newest delivery per case, compared with the newest open entry's: an
    # entry of the same version queued after the delivery (an operator keeping the service's side of a
    # pull conflict, ``requeue``) is sent again, not superseded
    newest_done: dict[str, tuple[int, int]] = {}
    for ref, version, entry_id in conn.execute(
        select(outbox.c.case_ref, outbox.c.version, func.max(outbox.c.id))
        .where(outbox.c.case_ref.in_(locked), outbox.c.state == DONE, outbox.c.server_url == server_url)
        .group_by(outbox.c.case_ref, outbox.c.version)
    ):
        newest_done[ref] = max(newest_done.get(ref, (0, 0)), (version, entry_id))
    by_case: dict[str, list[Any]] = {}
    for row in open_rows:
        by_case.setdefault(row.case_ref, []).append(row)
    claims: list[Claim] = []
    stale: list[int] = []
    for ref in (r for r in refs if r in by_case):
        rows = by_case[ref]
        if any(r.state == SENDING and r.lease_until >= now for r in rows):
            continue  # another worker is sending this case right now
        newest = rows[-1]
        done = newest_done.get(ref)
        if done is not None and (
            done[0] > newest.version or (done[0] == newest.version and done[1] > newest.id)
        ):
            stale.extend(r.id for r in rows)  # the server already has this snapshot or a newer one
            continue
        stale.extend(r.id for r in rows[:-1])
        due = (newest.state == PENDING and newest.next_attempt_at <= now) or (
            newest.state == SENDING and newest.lease_until < now
        )
        if due:
            claims.append(Claim(newest.id, ref, newest.version, newest.attempts, server_url))
    if stale:
        conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(stale), outbox.c.state.in_((PENDING, SENDING)))
            .values(state=SUPERSEDED, lease_until=None, server_url=server_url)
        )
    lease_until = now + timedelta(seconds=lease_s)
    taken = []
    for c in claims:
        moved = conn.execute(
            update(outbox)
            .where(outbox.c.id == c.id, _due(now))
            .values(state=SENDING, claimed_by=worker_id, lease_until=lease_until, server_url=server_url)
        )
        if moved.rowcount == 1:
            taken.append(c)
    return taken


def _mine(entry_id: int, worker_id: str) -> Any:
    """The fence of every write after a claim: a worker whose lease was taken over changes nothing."""
    return and_(outbox.c.id == entry_id, outbox.c.state == SENDING, outbox.c.claimed_by == worker_id)


def renew(conn: Connection, entry_id: int, worker_id: str, lease_until: datetime) -> str | None:
    """Extend the lease just before sending and return the bundle to send; None if the claim was lost."""
    moved = conn.execute(update(outbox).where(_mine(entry_id, worker_id)).values(lease_until=lease_until))
    if moved.rowcount != 1:
        return None
    bundle: str | None = conn.execute(
        select(case_versions.c.bundle_json)
        .select_from(
            outbox.join(
                case_versions,
                and_(
                    case_versions.c.case_ref == outbox.c.case_ref, case_versions.c.version == outbox.c.version
                ),
            )
        )
        .where(outbox.c.id == entry_id)
    ).scalar_one_or_none()
    return bundle


def mark_done(
    conn: Connection, entry: Claim, worker_id: str, *, now: datetime, synced: Sequence[Synced]
) -> bool:
    """Finish an entry and record where its resources live; False if the claim was lost meanwhile."""
    moved = conn.execute(
        update(outbox).where(_mine(entry.id, worker_id)).values(state=DONE, done_at=now, lease_until=None)
    )
    if moved.rowcount != 1:
        return False
    rows = [
        {
            "server_url": entry.server_url,
            "case_ref": entry.case_ref,
            "identifier": s.identifier,
            "resource_type": s.resource_type,
            "server_id": s.server_id,
            "server_version": s.server_version,
            "case_version": entry.version,
            "synced_at": now,
        }
        for s in synced
    ]
    if rows:
        _upsert_synced(conn, rows)
    return True


def _upsert_synced(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert or update by (server_url, case_ref, identifier); an older case version never overwrites a
    newer one."""
    changing = ("resource_type", "server_id", "server_version", "case_version", "synced_at")
    t = synced_resources
    name = conn.dialect.name
    if name in ("postgresql", "sqlite"):
        dialect_insert = postgresql.insert if name == "postgresql" else sqlite.insert
        stmt = dialect_insert(t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.server_url, t.c.case_ref, t.c.identifier],
            set_={c: stmt.excluded[c] for c in changing},
            where=t.c.case_version <= stmt.excluded.case_version,
        )
        conn.execute(stmt, rows)
        return
    for row in rows:  # any other database: the portable two-step form
        key = and_(
            t.c.server_url == row["server_url"],
            t.c.case_ref == row["case_ref"],
            t.c.identifier == row["identifier"],
        )
        found = conn.execute(select(t.c.case_version).where(key)).scalar_one_or_none()
        if found is None:
            conn.execute(insert(t).values(**row))
        elif found <= row["case_version"]:
            conn.execute(update(t).where(key).values(**{c: row[c] for c in changing}))


def reschedule(
    conn: Connection,
    entry_id: int,
    worker_id: str,
    *,
    next_attempt_at: datetime,
    error: str,
    outcome_json: str | None = None,
) -> bool:
    """A failed attempt that may succeed later: back to ``pending``, one more attempt counted."""
    moved = conn.execute(
        update(outbox)
        .where(_mine(entry_id, worker_id))
        .values(
            state=PENDING,
            attempts=outbox.c.attempts + 1,
            next_attempt_at=next_attempt_at,
            lease_until=None,
            last_error=error,
            outcome_json=outcome_json,
        )
    )
    return moved.rowcount == 1


def release(conn: Connection, entry_ids: Sequence[int], worker_id: str, *, next_attempt_at: datetime) -> int:
    """Give back claims that were not attempted (stopping, or the server is down): no attempt counted."""
    if not entry_ids:
        return 0
    moved = conn.execute(
        update(outbox)
        .where(outbox.c.id.in_(entry_ids), outbox.c.state == SENDING, outbox.c.claimed_by == worker_id)
        .values(state=PENDING, next_attempt_at=next_attempt_at, lease_until=None)
    )
    return int(moved.rowcount)


def dead_letter(
    conn: Connection, entry_id: int, worker_id: str, *, error: str, outcome_json: str | None
) -> bool:
    """The server rejected the content: resending it unchanged cannot help, so stop until a person acts."""
    moved = conn.execute(
        update(outbox)
        .where(_mine(entry_id, worker_id))
        .values(
            state=DEAD,
            attempts=outbox.c.attempts + 1,
            lease_until=None,
            last_error=error,
            outcome_json=outcome_json,
        )
    )
    return moved.rowcount == 1


class NoSuchEntry(LookupError):
    pass


class NotDead(ValueError):
    def __init__(self, state: str) -> None:
        super().__init__(f"the entry is {state}, not dead")
        self.state = state


def requeue(conn: Connection, ref: str, version: int, *, now: datetime) -> bool:
    """Send ``version`` of a case again, though it may have been delivered (the server changed its
    resources since and the service's side is to win). False when an entry of it waits or is being sent
    already (that send carries it)."""
    waiting = conn.execute(
        select(outbox.c.id).where(
            outbox.c.case_ref == ref, outbox.c.version >= version, outbox.c.state.in_((PENDING, SENDING))
        )
    ).first()
    if waiting is not None:
        return False
    conn.execute(
        insert(outbox).values(
            case_ref=ref, version=version, state=PENDING, attempts=0, next_attempt_at=now, created_at=now
        )
    )
    return True


def retry(conn: Connection, entry_id: int, *, now: datetime) -> str:
    """A dead entry back to ``pending`` with its attempts reset, or ``superseded`` when a later version
    of the case was delivered to the same server since (sending this one would overwrite newer data).
    Returns the new state."""
    row = conn.execute(
        select(outbox.c.case_ref, outbox.c.version, outbox.c.state, outbox.c.server_url)
        .where(outbox.c.id == entry_id)
        .with_for_update()
    ).first()
    if row is None:
        raise NoSuchEntry(entry_id)
    if row.state != DEAD:
        raise NotDead(row.state)
    later = outbox.alias("later")
    newer_done = conn.execute(
        select(
            exists().where(
                later.c.case_ref == row.case_ref,
                later.c.version > row.version,
                later.c.state == DONE,
                later.c.server_url.is_not_distinct_from(row.server_url),
            )
        )
    ).scalar_one()
    if newer_done:
        conn.execute(update(outbox).where(outbox.c.id == entry_id).values(state=SUPERSEDED))
        return SUPERSEDED
    conn.execute(
        update(outbox)
        .where(outbox.c.id == entry_id)
        .values(state=PENDING, attempts=0, next_attempt_at=now, lease_until=None, claimed_by=None)
    )
    return PENDING
