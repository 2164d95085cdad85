"""The sync worker: claim due outbox entries, send each version's Bundle, record the outcome.

Delivery is at least once, and in effect exactly once: every request of a Bundle is a conditional
update by business identifier (or a PUT by a deterministic id), so sending a version again, after a
crash between sending and recording, changes nothing on the server. A worker killed mid-batch leaves
its entries ``sending``; when their lease runs out any worker takes them again.

Logs name the case ref (a uuid) and counts, never Bundle content: it is patient data.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import Enum
from types import FrameType
from typing import Any

import orjson
from sqlalchemy import Engine

from service.clock import utcnow
from service.fhir.client import FhirClient, FhirRejected, FhirTokenRefused, FhirUnavailable
from service.sync import outbox
from service.sync.adopt import addressed, pulled_ids
from service.sync.bundles import synced

log = logging.getLogger("ivclms.sync")

BATCH_SIZE = 10
LEASE_S = 300.0
"""Longer than the slowest transaction the client can make (timeout x (retries + 1) plus backoff):
a lease that runs out while a worker still sends lets a second worker send the same case."""
POLL_S = 2.0
BACKOFF_BASE_S = 5.0
MAX_BACKOFF_S = 300.0

RETRY_4XX = frozenset({401, 403, 407, 409})
"""4xx answers that are not about the Bundle (credentials, a concurrent write on the server): retried
later like an outage instead of dead-lettered. So is a token endpoint that refuses the credentials
(``FhirTokenRefused``), whatever its status: the Bundle was never sent. A 401 reaches the worker only
after the client renewed its token once and the server still refused (``FhirClient.request``)."""


def default_worker_id() -> str:
    """Unique per process: the fence of every write after a claim relies on it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def backoff_s(
    attempt: int,
    *,
    base_s: float = BACKOFF_BASE_S,
    max_s: float = MAX_BACKOFF_S,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with jitter, capped, for the ``attempt``-th failure (1, 2, ...); never
    sooner than the server's Retry-After. Jitter spreads the retries of many entries after an outage."""
    ceiling = min(max_s, base_s * 2.0 ** min(max(0, attempt - 1), 40))
    delay = ceiling * (0.5 + 0.5 * rand())
    return max(delay, retry_after or 0.0)


def error_summary(status: int | None, outcome: dict[str, Any] | None) -> str:
    """Status and the OperationOutcome's issue codes and expressions: diagnostics may echo submitted
    values (patient data), so they stay in ``outcome_json`` only."""
    parts = [f"HTTP {status}" if status is not None else "no HTTP answer"]
    for issue in (outcome or {}).get("issue", [])[:20]:
        if not isinstance(issue, dict):
            continue
        where = ",".join(str(e) for e in (issue.get("expression") or issue.get("location") or [])[:3])
        parts.append(
            f"{issue.get('severity', '?')} {issue.get('code', '?')}" + (f" @ {where}" if where else "")
        )
    return "; ".join(parts)[:2000]


class Result(Enum):
    DONE = "done"
    RESCHEDULED = "rescheduled"
    UNAVAILABLE = "unavailable"
    DEAD = "dead"
    LOST = "lost"


class Worker:
    def __init__(
        self,
        engine: Engine,
        client: FhirClient,
        *,
        worker_id: str | None = None,
        batch_size: int = BATCH_SIZE,
        lease_s: float = LEASE_S,
        poll_s: float = POLL_S,
        backoff_base_s: float = BACKOFF_BASE_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if batch_size < 1 or lease_s <= 0 or poll_s < 0:
            raise ValueError("batch_size must be >= 1, lease_s > 0 and poll_s >= 0")
        self.engine = engine
        self.client = client
        self.worker_id = worker_id or default_worker_id()
        self.batch_size = batch_size
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.backoff_base_s = backoff_base_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self._sleep = sleep
        self._rand = rand

    # -- one round --------------------------------------------------------------------------------

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Claim one batch and send it; returns how many entries were attempted.

        When the server is unavailable the rest of the batch is given back unattempted (one failed
        request per round during an outage, not one per entry); on ``stop`` likewise, so another
        worker can take it at once instead of waiting for the lease to run out.
        """
        with self.engine.begin() as conn:
            claims = outbox.claim(
                conn,
                worker_id=self.worker_id,
                now=self.clock(),
                lease_s=self.lease_s,
                limit=self.batch_size,
                server_url=self.client.base_url,
            )
        attempted = 0
        for index, entry in enumerate(claims):
            if stop is not None and stop.is_set():
                self._release(claims[index:], self.clock())
                break
            result, next_at = self._process(entry)
            attempted += 1
            if result is Result.UNAVAILABLE and index + 1 < len(claims):
                assert next_at is not None
                self._release(claims[index + 1 :], next_at)
                break
        return attempted

    def _release(self, entries: list[outbox.Claim], next_attempt_at: datetime) -> None:
        with self.engine.begin() as conn:
            count = outbox.release(
                conn, [e.id for e in entries], self.worker_id, next_attempt_at=next_attempt_at
            )
        log.info("released %d claimed entries unattempted", count)

    def _process(self, entry: outbox.Claim) -> tuple[Result, datetime | None]:
        with self.engine.begin() as conn:
            lease_until = self.clock() + timedelta(seconds=self.lease_s)
            bundle_json = outbox.renew(conn, entry.id, self.worker_id, lease_until)
            pulled = pulled_ids(conn, self.client.base_url, entry.case_ref) if bundle_json else {}
        if bundle_json is None:
            log.warning(
                "case %s v%d: claim lost (lease ran out and was taken over)", entry.case_ref, entry.version
            )
            return Result.LOST, None
        try:
            bundle = addressed(orjson.loads(bundle_json), pulled)
            response = self.client.transaction(bundle, idempotent=True)
            resources, unknown = synced(bundle, response)
        except FhirUnavailable as exc:
            summary = "unavailable: " + error_summary(exc.status, exc.outcome)
            next_at = self._reschedule(entry, summary, exc.outcome, exc.retry_after)
            return Result.UNAVAILABLE, next_at
        except FhirRejected as exc:
            summary = error_summary(exc.status, exc.outcome)
            if exc.status in RETRY_4XX or isinstance(exc, FhirTokenRefused):
                next_at = self._reschedule(entry, "refused: " + summary, exc.outcome, None)
                return Result.UNAVAILABLE, next_at
            with self.engine.begin() as conn:
                outbox.dead_letter(
                    conn,
                    entry.id,
                    self.worker_id,
                    error="rejected: " + summary,
                    outcome_json=_dump(exc.outcome),
                )
            log.error(
                "case %s v%d: rejected by the FHIR server (%s); dead-lettered",
                entry.case_ref,
                entry.version,
                summary,
            )
            return Result.DEAD, None
        except Exception as exc:  # a defect, not data: the type is logged, the message may hold values
            next_at = self._reschedule(entry, f"unexpected: {type(exc).__name__}", None, None)
            return Result.RESCHEDULED, next_at
        with self.engine.begin() as conn:
            finished = outbox.mark_done(conn, entry, self.worker_id, now=self.clock(), synced=resources)
        if not finished:
            log.warning(
                "case %s v%d: sent, but the claim was taken over meanwhile", entry.case_ref, entry.version
            )
            return Result.LOST, None
        log.info(
            "case %s v%d: synced %d resources%s",
            entry.case_ref,
            entry.version,
            len(resources),
            f" ({unknown} without a usable location)" if unknown else "",
        )
        return Result.DONE, None

    def _reschedule(
        self, entry: outbox.Claim, summary: str, outcome: dict[str, Any] | None, retry_after: float | None
    ) -> datetime:
        delay = backoff_s(
            entry.attempts + 1,
            base_s=self.backoff_base_s,
            max_s=self.max_backoff_s,
            retry_after=retry_after,
            rand=self._rand,
        )
        next_at = self.clock() + timedelta(seconds=delay)
        with self.engine.begin() as conn:
            outbox.reschedule(
                conn,
                entry.id,
                self.worker_id,
                next_attempt_at=next_at,
                error=summary,
                outcome_json=_dump(outcome),
            )
        log.warning(
            "case %s v%d: attempt %d failed (%s); next in %.0f s",
            entry.case_ref,
            entry.version,
            entry.attempts + 1,
            summary,
            delay,
        )
        return next_at

    # -- the loop ---------------------------------------------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        """Rounds until ``stop`` is set; idle rounds wait ``poll_s``. A database or other failure of a
        round is logged by type and the loop goes on: the worker outlives outages of its dependencies."""
        log.info(
            "sync worker %s started (batch %d, lease %.0f s)", self.worker_id, self.batch_size, self.lease_s
        )
        while not stop.is_set():
            try:
                attempted = self.run_once(stop)
            except Exception as exc:
                log.error("sync round failed: %s; next round in %.1f s", type(exc).__name__, self.poll_s)
                attempted = 0
            if attempted == 0 and not stop.is_set():
                if self._sleep is not None:
                    self._sleep(self.poll_s)
                else:
                    stop.wait(self.poll_s)
        log.info("sync worker %s stopped", self.worker_id)


def _dump(outcome: dict[str, Any] | None) -> str | None:
    return orjson.dumps(outcome).decode() if outcome is not None else None


def install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM and SIGINT set ``stop``: the entry being sent is finished, the rest of the batch given
    back. Returns a function that restores the previous handlers. Main thread only."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping after the current entry", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
