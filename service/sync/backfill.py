"""Backfill: queue what the configured FHIR server has not had, exactly once.

Intake queues a case version only while sync is on (``IVCLMS_FHIR_URL`` set in the process that
stores it). Cases stored while sync was off, or before a hospital moved to another server, have no
delivery record for the server now configured, and nothing would ever send them. ``backfill`` queues
the current version of each such case once: ``ivclms worker`` runs it at start, ``ivclms sync
backfill`` on demand.

A case counts as having a delivery record for server S when its current version has an entry that is

* ``pending`` or ``sending`` (any server: an open entry goes to whichever server the worker that
  claims it is configured for, which is S), or
* ``done`` or ``dead`` for S (dead: S refused that content; a person acts, ``ivclms sync retry``).

Entries ``done`` for another server do not count. A withdrawn case (entered-in-error) is queued only
when S had the case, or an open entry would send it there: a server that never had a case does not
need its withdrawal.

Exactly once: two backfills (two workers starting together) must not both queue the same case. On
PostgreSQL each takes the transaction-scoped advisory lock ``LOCK_KEY`` first (the pattern of the
schema migrations, ``service.store.migrate``), and reads the cases under it, so the second sees what
the first committed (READ COMMITTED: every statement reads the commits before it). It does not lock
case rows, so intake and claims never wait on it. On SQLite, ``BEGIN IMMEDIATE`` (``service.db``)
holds the one writer lock for the whole transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, Select, and_, exists, insert, or_, select, text, update

from service.clock import utcnow
from service.store.cases import ENTERED_IN_ERROR
from service.store.tables import cases, outbox, synced_resources
from service.sync.outbox import DEAD, DONE, PENDING, SENDING, SUPERSEDED

log = logging.getLogger("ivclms.sync")

LOCK_KEY = 0x1F0C_2027
"""PostgreSQL advisory lock id of backfills (migrations hold 0x1F0C_2026)."""


@dataclass(frozen=True)
class Backfill:
    queued: int
    """Cases whose current version was queued for the server."""
    adopted: int
    """Outbox entries written before servers were recorded, now attributed to this server."""


def backfill(engine: Engine, server_url: str, *, clock: Callable[[], datetime] = utcnow) -> Backfill:
    """Queue the current version of every case without a delivery record for ``server_url``."""
    with engine.begin() as conn:  # BEGIN IMMEDIATE on SQLite: the writer lock from the start
        result = queue_missing(conn, server_url, clock())
    log.info(
        "backfill for %s: %d cases queued, %d earlier entries attributed to it",
        server_url,
        result.queued,
        result.adopted,
    )
    return result


def queue_missing(conn: Connection, server_url: str, now: datetime) -> Backfill:
    """The backfill on a connection inside a write transaction the caller commits."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    adopted = adopt_legacy(conn, server_url)
    todo = [(str(ref), int(version)) for ref, version in conn.execute(missing(server_url))]
    if todo:
        conn.execute(
            insert(outbox),
            [
                {
                    "case_ref": ref,
                    "version": version,
                    "state": PENDING,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "server_url": server_url,
                }
                for ref, version in todo
            ],
        )
    return Backfill(queued=len(todo), adopted=adopted)


def missing(server_url: str) -> Select[str, int]:
    """SELECT (case ref, current version) of the cases without a delivery record for ``server_url``."""
    current = outbox.alias("current")
    recorded = exists().where(
        current.c.case_ref == cases.c.id,
        current.c.version == cases.c.version,
        or_(
            current.c.state.in_((PENDING, SENDING)),
            and_(current.c.state.in_((DONE, DEAD)), current.c.server_url == server_url),
        ),
    )
    earlier = outbox.alias("earlier")
    known_there = exists().where(
        earlier.c.case_ref == cases.c.id,
        or_(
            earlier.c.state.in_((PENDING, SENDING)),
            and_(earlier.c.state == DONE, earlier.c.server_url == server_url),
        ),
    )
    return (
        select(cases.c.id, cases.c.version)
        .where(~recorded, or_(cases.c.status != ENTERED_IN_ERROR, known_there))
        .order_by(cases.c.updated_at, cases.c.id)
    )


def adopt_legacy(conn: Connection, server_url: str) -> int:
    """Records written before revision 0005 name no server: they are taken to be of the server
    configured at the first backfill after the upgrade (the worker's start). Returns the outbox
    entries attributed; later calls find none."""
    moved = conn.execute(
        update(outbox)
        .where(outbox.c.server_url.is_(None), outbox.c.state.in_((DONE, DEAD, SUPERSEDED)))
        .values(server_url=server_url)
    )
    mine = synced_resources.alias("mine")
    taken = exists().where(
        mine.c.server_url == server_url,
        mine.c.case_ref == synced_resources.c.case_ref,
        mine.c.identifier == synced_resources.c.identifier,
    )
    conn.execute(
        update(synced_resources)
        .where(synced_resources.c.server_url == "", ~taken)
        .values(server_url=server_url)
    )
    return int(moved.rowcount)
