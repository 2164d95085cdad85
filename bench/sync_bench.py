"""Sync end to end: resources/s the worker delivers to HAPI FHIR from the outbox, against the ceiling
(the same prepared transaction Bundles posted straight to HAPI by a minimal ``requests`` loop), for
several worker batch sizes.

Each side gets ``N`` fresh cases (bench/workload.py, new ids per side, so every transaction creates
new resources on HAPI). A worker side seeds them through ``Intake(engine, enqueue=True)`` into a
temporary SQLite database (profile validation off, to seed faster; the Bundles are the same), then
times ``Worker(engine, FhirClient(hapi), batch_size=B).run_once()`` until a round finds nothing
(the outbox drained), and checks every entry is done and every resource recorded in
``synced_resources``. The ceiling prepares the same way (``Intake.prepare``, nothing stored),
serialises the Bundles before the clock starts and POSTs them one at a time over one keep-alive
``requests.Session``, like the worker (one entry at a time). HAPI is warmed up first (``--warmup``
transactions: a freshly started JVM needs ~100 to reach speed), then the sides run in two passes of
half the cases each, in the order ceiling, batch sizes ascending, and then reversed, so HAPI's drift
over the run (its database grows, the machine is shared) falls on every side alike.

    .venv/bin/python -m bench.sync_bench --cases 100 --batches 1 10 50 [--hapi http://127.0.0.1:8090/fhir]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import requests

NOW = "2026-01-01T00:00:00Z"


@dataclass
class Side:
    name: str
    cases: int
    resources: int
    wall_s: float
    in_transaction_s: float
    """Time spent inside the HTTP transaction (client side), the rest is the worker's own."""

    @property
    def rate(self) -> float:
        return self.resources / self.wall_s


def _prepared(count: int, tag: str) -> list[Any]:
    from bench.workload import cases
    from service.intake import Intake

    intake = Intake(None, enqueue=True)  # type: ignore[arg-type]  # prepare() never touches the database
    return [intake.prepare(case) for case in cases(count, prefix=tag)]


def ceiling(hapi: str, count: int, label: str) -> Side:
    bodies = [orjson.dumps(p.bundle) for p in _prepared(count, f"S{uuid.uuid4().hex[:6].upper()}")]
    resources = sum(len(orjson.loads(b)["entry"]) for b in bodies)
    session = requests.Session()
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    start = time.perf_counter()
    for body in bodies:
        resp = session.post(hapi, data=body, headers=headers, timeout=120)
        if resp.status_code != 200:
            raise SystemExit(f"HAPI answered {resp.status_code}: {resp.text[:500]}")
        resp.json()  # the worker reads the transaction-response too
    wall = time.perf_counter() - start
    session.close()
    return Side(label, count, resources, wall, wall)


def worker(hapi: str, count: int, batch: int) -> Side:
    from sqlalchemy import func, select

    from service.db import make_engine
    from service.fhir.client import FhirClient
    from service.intake import Intake, OnChange
    from service.settings import Settings
    from service.store import migrate
    from service.store.tables import outbox, synced_resources
    from service.sync.worker import Worker

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(Settings(data_dir=Path(tmp), auth_disabled=True))
        migrate.upgrade(engine)
        intake = Intake(engine, enqueue=True)
        prepared = _prepared(count, f"S{uuid.uuid4().hex[:6].upper()}")
        for i in range(0, count, 50):
            intake.submit_many(prepared[i : i + 50], "bench", on_change=OnChange.NEW_VERSION)
        expected = sum(len(p.bundle["entry"]) for p in prepared)

        in_transaction = 0.0

        class TimedClient(FhirClient):
            def transaction(self, bundle: dict[str, Any], *, idempotent: bool = False) -> dict[str, Any]:
                nonlocal in_transaction
                t0 = time.perf_counter()
                try:
                    return super().transaction(bundle, idempotent=idempotent)
                finally:
                    in_transaction += time.perf_counter() - t0

        client = TimedClient(hapi, timeout=120)
        w = Worker(engine, client, batch_size=batch)
        start = time.perf_counter()
        while w.run_once():
            pass
        wall = time.perf_counter() - start
        client.close()
        with engine.connect() as conn:
            rows = conn.execute(select(outbox.c.state, func.count()).group_by(outbox.c.state))
            states = {state: n for state, n in rows}
            recorded = int(conn.execute(select(func.count()).select_from(synced_resources)).scalar_one())
        engine.dispose()
    if states != {"done": count} or recorded != expected:
        raise SystemExit(f"batch {batch}: outbox {states}, {recorded} of {expected} resources recorded")
    return Side(f"worker, batch {batch}", count, recorded, wall, in_transaction)


def _add(total: dict[str, Side], part: Side) -> None:
    if part.name not in total:
        total[part.name] = part
        return
    t = total[part.name]
    total[part.name] = Side(
        t.name,
        t.cases + part.cases,
        t.resources + part.resources,
        t.wall_s + part.wall_s,
        t.in_transaction_s + part.in_transaction_s,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=int, default=100, help="cases per side (half in each pass)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--warmup", type=int, default=100, help="transactions sent to HAPI before measuring")
    parser.add_argument("--hapi", default="http://127.0.0.1:8090/fhir")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, python {platform.python_version()}, "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    ceiling(args.hapi, args.warmup, "warm-up")  # HAPI's JIT and caches, not counted
    order: list[int | None] = [None, *args.batches]  # None: the ceiling
    half = args.cases // 2
    totals: dict[str, Side] = {}
    for sequence in (order, order[::-1]):  # ABCD then DCBA: HAPI's drift falls on every side alike
        for batch in sequence:
            part = ceiling(args.hapi, half, "ceiling") if batch is None else worker(args.hapi, half, batch)
            print(json.dumps(part.__dict__), flush=True)
            _add(totals, part)

    top = totals["ceiling"].rate
    print()
    print(
        "| side | cases | resources | time s | resources/s | ms/case in HTTP | ms/case other | vs ceiling |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for s in totals.values():
        other = (s.wall_s - s.in_transaction_s) / s.cases * 1000
        print(
            f"| {s.name} | {s.cases} | {s.resources} | {s.wall_s:.1f} | {s.rate:.0f} | "
            f"{s.in_transaction_s / s.cases * 1000:.0f} | {other:.1f} | {s.rate / top:.2f} |"
        )


if __name__ == "__main__":
    main()
