"""Prometheus metrics (issue 17 goal 7): what an operator scrapes from ``GET /metrics``.

One ``CollectorRegistry`` per application, not prometheus_client's global one: two apps in one
process (the tests build many) would otherwise register the same names twice. The queue and export
figures are read from the database at scrape time (``DatabaseCollector``), so every worker reports
the same, current, numbers. Request and validation figures are counted in this process, unless
prometheus_client runs in its multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, which ``ivclms serve``
sets for more than one gunicorn worker): then each worker writes its figures to a file there and a
scrape answered by any worker sums every worker's (``MultiProcessCollector``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from service.clock import utcnow
from service.db import READ_ONLY
from service.store.tables import export_jobs, outbox
from service.sync import outbox as outbox_states

log = logging.getLogger("ivclms.metrics")

OUTBOX_STATES = (
    outbox_states.PENDING,
    outbox_states.SENDING,
    outbox_states.DONE,
    outbox_states.DEAD,
    outbox_states.SUPERSEDED,
)
EXPORT_STATES = ("queued", "running", "done", "failed", "cancelled")
"""The states of ``export_jobs.state`` (its column comment): each is reported, zero when empty, so an
alert on ``state="failed"`` has a series to watch before the first failure."""
STORAGE_FULL_HELP = (
    "1 after a write failed because the database's storage is full (answered 507), until a write "
    "succeeds again"
)
UNMATCHED_ROUTE = "<unmatched>"
"""The route label of a request no route matched: never its path (a path can carry identifiers)."""


def multiprocess() -> bool:
    """Whether prometheus_client counts in files shared by processes (decided when it was imported)."""
    return values.ValueClass is not values.MutexValue


@dataclass
class Metrics:
    """The application's registry and the figures counted in this process (or, in multiprocess
    mode, written for every worker's scrape to sum)."""

    engine: Engine
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    _storage_full: bool = False

    def __post_init__(self) -> None:
        shared = multiprocess()
        # Multiprocess: the figures are written to files, and the registry reads every worker's files;
        # registering them as well would report this process's share a second time.
        own = None if shared else self.registry
        self.requests = Counter(
            "ivclms_http_requests",
            "HTTP requests answered, by route template (never the concrete path), method and status",
            ["route", "method", "status"],
            registry=own,
        )
        self.request_seconds = Histogram(
            "ivclms_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            registry=own,
        )
        self.validation_seconds = Histogram(
            "ivclms_validation_seconds",
            "Time the profile validation of an intake's bundle took (IVCLMS_VALIDATE_INTAKE)",
            registry=own,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf")),
        )
        self._storage_gauge: Gauge | None = None
        if shared:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
            self._storage_gauge = Gauge(
                "ivclms_storage_full",
                STORAGE_FULL_HELP + " (the highest of the live workers)",
                registry=None,
                multiprocess_mode="livemax",
            )
            self._storage_gauge.set(0)
        self.registry.register(DatabaseCollector(self))

    @property
    def storage_full(self) -> bool:
        """Set when a write failed for want of space (507), cleared when a write succeeds again; in
        this process (``/readyz`` answers for the worker that was asked)."""
        return self._storage_full

    @storage_full.setter
    def storage_full(self, full: bool) -> None:
        self._storage_full = full
        if self._storage_gauge is not None:
            self._storage_gauge.set(1 if full else 0)

    def timed(self, check: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
        """``check`` (the intake's bundle validation) observed in ``ivclms_validation_seconds``; a
        bundle refused (the check raises) is observed too: it took the time as well."""

        def timed_check(bundle: dict[str, Any]) -> None:
            with self.validation_seconds.time():
                check(bundle)

        return timed_check


class DatabaseCollector(Collector):
    """Read at scrape time, one cheap query per family (the outbox and export-job state indexes):
    nothing cached, nothing that can drift from the tables."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if not multiprocess():  # else a multiprocess gauge of every worker's flag
            yield GaugeMetricFamily(
                "ivclms_storage_full",
                STORAGE_FULL_HELP + "; counted in this process",
                value=1 if self.metrics.storage_full else 0,
            )
        up = GaugeMetricFamily("ivclms_database_up", "1 when the scrape could read the database")
        try:
            families = list(self._from_database())
        except SQLAlchemyError as exc:  # the scrape still answers: an operator sees the database down
            log.error("metrics: database not readable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _from_database(self) -> Iterator[GaugeMetricFamily]:
        with self.metrics.engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            counts: dict[str, int] = {
                state: n
                for state, n in conn.execute(select(outbox.c.state, func.count()).group_by(outbox.c.state))
            }
            oldest = conn.execute(
                select(func.min(outbox.c.created_at)).where(
                    outbox.c.state.in_((outbox_states.PENDING, outbox_states.SENDING))
                )
            ).scalar_one_or_none()
            jobs: dict[str, int] = {
                state: n
                for state, n in conn.execute(
                    select(export_jobs.c.state, func.count()).group_by(export_jobs.c.state)
                )
            }
        entries = GaugeMetricFamily(
            "ivclms_outbox_entries", "Outbox entries (sync to the FHIR server) by state", labels=["state"]
        )
        for state in sorted({*OUTBOX_STATES, *counts}):
            entries.add_metric([state], counts.get(state, 0))
        yield entries
        yield GaugeMetricFamily(
            "ivclms_outbox_dead_letters",
            "Outbox entries that gave up (state dead): they wait for an operator (POST /sync/retry)",
            value=counts.get(outbox_states.DEAD, 0),
        )
        age = 0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
        yield GaugeMetricFamily(
            "ivclms_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending or sending outbox entry (the delivery lag); 0 when none waits",
            value=age,
        )
        exports = GaugeMetricFamily("ivclms_export_jobs", "Bulk export jobs by state", labels=["state"])
        for state in sorted({*EXPORT_STATES, *jobs}):
            exports.add_metric([state], jobs.get(state, 0))
        yield exports
