"""Bulk export throughput and peak memory at two sizes: the service's ``$export`` writer against the
floor (the same rows read and written by a bare loop) and, optionally, HAPI's own ``$export``.

Each side runs in a fresh child process so its peak RSS (``ru_maxrss``) is its own. The database is
seeded once per size with the example cases multiplied under fresh ids (bench/workload.py) through
the real intake (mapping, storage, read-side index; profile validation off to seed faster).

    .venv/bin/python -m bench.export_bench --sizes 10000 100000 [--hapi http://127.0.0.1:8090/fhir
        [--hapi-all-sizes]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESOURCES_PER_CASE_GUESS = 40
SEED_THREADS = 4


def _seed(data_dir: Path, resources: int) -> tuple[int, int]:
    """Cases stored until the read side holds at least ``resources`` resources; (cases, resources)."""
    from sqlalchemy import func, select

    from bench.workload import cases
    from service.db import make_engine
    from service.intake import Intake, OnChange
    from service.settings import Settings
    from service.store import migrate
    from service.store.tables import resources as table

    engine = make_engine(Settings(data_dir=data_dir, auth_disabled=True))
    migrate.upgrade(engine)
    intake = Intake(engine, enqueue=False)
    stored = 0
    total = 0
    batch: list[Any] = []
    for case in cases(resources):  # more than enough; stops early
        batch.append(intake.prepare(case))
        if len(batch) == 50:
            intake.submit_many(batch, "bench", on_change=OnChange.NEW_VERSION)
            stored += len(batch)
            batch = []
            with engine.connect() as conn:
                total = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            if total >= resources:
                break
    engine.dispose()
    return stored, total


# Peak RSS of the child itself: VmHWM starts afresh at exec (ru_maxrss would count the parent's fork).
PEAK = """
def peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
"""

CHILD_SERVICE = (
    PEAK
    + """
import resource, sys, time, uuid
from datetime import UTC, datetime
from pathlib import Path
from service import bulk_export
from service.db import make_engine
from service.search import RESOURCE_TYPES
from service.settings import Settings
data_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
engine = make_engine(Settings(data_dir=data_dir, auth_disabled=True))
now = datetime.now(UTC)
job = bulk_export.Job(id=str(uuid.uuid4()), state="running", level="system", types=RESOURCE_TYPES, since=None,
    request_url="bench", principal="bench", transaction_time=now, created_at=now, finished_at=None,
    expires_at=None, progress=0, manifest_json=None, error=None)
start = time.perf_counter()
outputs = bulk_export.write_files(engine, job, out)
elapsed = time.perf_counter() - start
print(sum(o["count"] for o in outputs), elapsed, peak_kb())
"""
)

CHILD_FLOOR = (
    PEAK
    + """
import resource, sqlite3, sys, time
from pathlib import Path
data_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
conn = sqlite3.connect(data_dir / "ivclms.sqlite3")
start = time.perf_counter()
count = 0
with open(out / "all.ndjson", "w") as f:
    types = sys.argv[3].split(",")
    marks = ",".join("?" * len(types))
    query = f"SELECT json FROM resources WHERE deleted = 0 AND resource_type IN ({marks})"
    for (text,) in conn.execute(query, types):
        f.write(text); f.write("\\n"); count += 1
elapsed = time.perf_counter() - start
print(count, elapsed, peak_kb())
"""
)


def _child(code: str, data_dir: Path, out: Path) -> tuple[int, float, int]:
    from service.search import RESOURCE_TYPES

    argv = [sys.executable, "-c", code, str(data_dir), str(out), ",".join(RESOURCE_TYPES)]
    result = subprocess.run(argv, check=True, capture_output=True, text=True)
    count, elapsed, rss_kb = result.stdout.split()
    return int(count), float(elapsed), int(rss_kb)


def _hapi_export(base: str, data_dir: Path, cases: int) -> tuple[int, float]:
    """Seed HAPI with the same cases as transactions, then time its $export to a complete download."""
    from bench.workload import cases as workload
    from service.case_files import map_case
    from service.fhir.client import FhirClient

    client = FhirClient(base, timeout=600)
    since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    tag = uuid.uuid4().hex[:8]
    items = list(workload(cases, prefix=f"H{tag}"))

    def seed(part: list[dict[str, Any]]) -> None:  # a client (Session) per thread
        own = FhirClient(base, timeout=600)
        try:
            for case in part:
                own.transaction(map_case(case, now=since), idempotent=True)
        finally:
            own.close()

    with ThreadPoolExecutor(SEED_THREADS) as pool:  # seeding is not timed; HAPI takes it faster so
        list(pool.map(seed, [items[i::SEED_THREADS] for i in range(SEED_THREADS)]))
    time.sleep(1.1)  # HAPI's _since has second precision: let the clock pass the last write
    start = time.perf_counter()
    kick = client.request(
        "GET", "$export", params={"_since": since}, headers={"Prefer": "respond-async"}, idempotent=True
    )
    status_url = kick.headers["Content-Location"]
    while True:
        resp = client.request("GET", status_url, idempotent=True)
        if resp.status_code == 200:
            manifest = resp.json()
            break
        time.sleep(0.2)
    count = 0
    for output in manifest["output"]:  # HAPI serves each file as a Binary: ask for its NDJSON content
        body = client.request(
            "GET", output["url"], headers={"Accept": "application/fhir+ndjson"}, idempotent=True
        )
        count += len(body.text.splitlines())
    return count, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--hapi", help="also time HAPI's $export of the same data (smallest size only)")
    parser.add_argument("--hapi-all-sizes", action="store_true", help="time HAPI at every size")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            t0 = time.perf_counter()
            cases, total = _seed(data, size)
            seeded = time.perf_counter() - t0
            service = _child(CHILD_SERVICE, data, data / "out-service")
            floor = _child(CHILD_FLOOR, data, data / "out-floor")
            row: dict[str, Any] = {
                "size": total,
                "cases": cases,
                "seed_s": seeded,
                "service": service,
                "floor": floor,
            }
            if args.hapi and (args.hapi_all_sizes or size == min(args.sizes)):
                row["hapi"] = _hapi_export(args.hapi, data, cases)
            rows.append(row)
            print(json.dumps(row))
    print()
    print("| resources | side | time s | resources/s | peak RSS MB | vs floor |")
    print("|---:|---|---:|---:|---:|---:|")
    for row in rows:
        floor_rate = row["floor"][0] / row["floor"][1]
        for side in ("service", "floor"):
            count, elapsed, rss = row[side]
            print(
                f"| {row['size']} | {side} | {elapsed:.2f} | {count / elapsed:,.0f} | {rss / 1024:.0f} | "
                f"{(count / elapsed) / floor_rate:.2f} |"
            )
        if "hapi" in row:
            count, elapsed = row["hapi"]
            print(
                f"| {count} | HAPI $export | {elapsed:.2f} | {count / elapsed:,.0f} | (JVM) | "
                f"{(count / elapsed) / floor_rate:.2f} |"
            )


if __name__ == "__main__":
    main()
