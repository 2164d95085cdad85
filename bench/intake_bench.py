"""Intake under load: cases/s and latency percentiles of ``POST /cases`` on the production server
(``ivclms serve``: gunicorn, 2 workers x 4 threads by default), against HAPI FHIR accepting the same
cases' transaction Bundles (``POST [base]``), at several numbers of concurrent clients.

The service runs as a child process on an ephemeral port with a temporary ``IVCLMS_DATA_DIR``
(embedded SQLite, or ``--db-url``), authentication off, sync off, profile validation on (the
default). Every request carries a fresh case (bench/workload.py: the example cases under new ids),
so every one stores a new case (201) and every HAPI transaction creates new resources. Bodies are
serialised before the clock starts; each client is a thread with its own ``requests.Session``
(keep-alive) taking the next request from a shared counter until the fixed number of requests per
level is spent. Throughput is requests / wall time of the level; latency is per request, client side.
The service's own figures come from its ``GET /metrics`` (read before and after each level, every
worker summed): the mean time a ``POST /cases`` spent inside the service, and of it in validation.
Both sides are warmed up first with ``--warmup`` requests at 4 clients (the service: both gunicorn
workers and the validator's memo; HAPI: its JIT, which needs ~100 transactions after a start).

The load generator runs on the same machine as the server under test (and HAPI, idle while the
service is measured), so all three share the cores.

    .venv/bin/python -m bench.intake_bench --levels 1 8 32 --requests 100 \
        [--hapi http://127.0.0.1:8090/fhir | --no-hapi] [--db-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import requests
from prometheus_client.parser import text_string_to_metric_families

NOW = "2026-01-01T00:00:00Z"
FHIR_JSON = "application/fhir+json"


@dataclass
class Level:
    side: str
    clients: int
    requests: int
    wall_s: float
    latencies: list[float]
    errors: dict[str, int]
    server: dict[str, float] | None = None
    """Server-side means from the service's own ``/metrics`` over this level (ms): the request's
    time inside the service and its profile validation; None for HAPI."""

    @property
    def rate(self) -> float:
        return self.requests / self.wall_s

    def pct(self, q: float) -> float:
        values = sorted(self.latencies)
        return values[max(0, math.ceil(q * len(values)) - 1)] * 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(data_dir: Path, db_url: str | None) -> Iterator[str]:
    """``ivclms serve`` as a child process; yields its base URL once ``/readyz`` answers 200."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IVCLMS_")}
    env |= {
        "IVCLMS_DATA_DIR": str(data_dir),
        "IVCLMS_AUTH_DISABLED": "true",
        "IVCLMS_HTTP_HOST": "127.0.0.1",
        "IVCLMS_HTTP_PORT": str(port),
        "IVCLMS_LOG_LEVEL": "WARNING",
    }
    if db_url:
        env["IVCLMS_DB_URL"] = db_url
    ivclms = Path(sys.executable).with_name("ivclms")
    log = (data_dir / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(ivclms), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(
                    f"ivclms serve exited {proc.returncode}: {(data_dir / 'serve.log').read_text()}"
                )
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("ivclms serve did not become ready in 120 s")
            time.sleep(0.3)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)  # gunicorn's master stops its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


Sums = dict[str, tuple[float, float]]
SERVER_FIGURES = {
    "request": ("ivclms_http_request_duration_seconds", {"route": "/cases", "method": "POST"}),
    "validation": ("ivclms_validation_seconds", {}),
}


def scrape(base: str) -> Sums:
    """(sum s, count) of each ``SERVER_FIGURES`` histogram, read from the service's ``/metrics``
    (every gunicorn worker's, summed: multiprocess mode) with prometheus_client's own parser."""
    text = requests.get(f"{base}/metrics", timeout=30).text
    found = {name: [0.0, 0.0] for name in SERVER_FIGURES}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for name, (metric, labels) in SERVER_FIGURES.items():
                wanted = sample.name in (f"{metric}_sum", f"{metric}_count")
                if wanted and labels.items() <= sample.labels.items():
                    found[name][sample.name.endswith("_count")] += sample.value
    return {name: (total, count) for name, (total, count) in found.items()}


def server_means(before: Sums, after: Sums) -> dict[str, float]:
    """Mean ms per observation of each figure between two scrapes."""
    means = {}
    for name in SERVER_FIGURES:
        total = after[name][0] - before[name][0]
        count = after[name][1] - before[name][1]
        means[name] = 1000 * total / count if count else float("nan")
    return means


def case_bodies(count: int, tag: str) -> list[bytes]:
    from bench.workload import cases

    return [orjson.dumps(case) for case in cases(count, prefix=tag)]


def bundle_bodies(count: int, tag: str) -> list[bytes]:
    from bench.workload import cases
    from service.case_files import map_case

    return [orjson.dumps(map_case(case, now=NOW)) for case in cases(count, prefix=tag)]


def drive(
    url: str, bodies: list[bytes], clients: int, content_type: str, expect: int
) -> tuple[float, list[float], dict[str, int]]:
    """POST every body with ``clients`` threads; (wall s, latencies s, errors by status)."""
    counter = itertools.count()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client() -> None:
        session = requests.Session()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        mine: list[float] = []
        start.wait()
        while (i := next(counter)) < len(bodies):
            t0 = time.perf_counter()
            try:
                status = str(session.post(url, data=bodies[i], headers=headers, timeout=120).status_code)
            except requests.RequestException as exc:
                status = type(exc).__name__
            mine.append(time.perf_counter() - t0)
            if status != str(expect):
                with lock:
                    errors[status] = errors.get(status, 0) + 1
        session.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, latencies, errors


def run_side(
    side: str,
    url: str,
    make: Any,
    content_type: str,
    expect: int,
    levels: list[int],
    count: int,
    warmup: int,
    metrics: str | None = None,
) -> list[Level]:
    """``metrics``: the service's base URL, whose ``/metrics`` is read before and after each level."""
    run = uuid.uuid4().hex[:6].upper()
    drive(url, make(warmup, f"W{run}"), 4, content_type, expect)  # warm-up, not counted
    out = []
    for clients in levels:
        bodies = make(count, f"L{run}C{clients}")
        before = scrape(metrics) if metrics else None
        wall, latencies, errors = drive(url, bodies, clients, content_type, expect)
        server = server_means(before, scrape(metrics)) if before is not None and metrics else None
        level = Level(side, clients, count, wall, latencies, errors, server)
        print(
            json.dumps(
                {
                    "side": side,
                    "clients": clients,
                    "requests": count,
                    "wall_s": round(wall, 2),
                    "per_s": round(level.rate, 1),
                    "p50_ms": round(level.pct(0.5)),
                    "p95_ms": round(level.pct(0.95)),
                    "p99_ms": round(level.pct(0.99)),
                    "errors": errors,
                    "server_ms": {k: round(v, 1) for k, v in server.items()} if server else None,
                }
            ),
            flush=True,
        )
        out.append(level)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=100, help="requests per level and side")
    parser.add_argument("--warmup", type=int, default=100, help="requests per side before measuring")
    parser.add_argument("--hapi", default="http://127.0.0.1:8090/fhir")
    parser.add_argument("--no-hapi", action="store_true")
    parser.add_argument("--db-url", help="also run the service on this (empty) database, e.g. PostgreSQL")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, python {platform.python_version()}, "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    results: list[Level] = []
    with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp), None) as base:
        results += run_side(
            "service (SQLite)",
            f"{base}/cases",
            case_bodies,
            "application/json",
            201,
            args.levels,
            args.requests,
            args.warmup,
            base,
        )
    if args.db_url:
        with tempfile.TemporaryDirectory() as tmp, serve(Path(tmp), args.db_url) as base:
            results += run_side(
                "service (PostgreSQL)",
                f"{base}/cases",
                case_bodies,
                "application/json",
                201,
                args.levels,
                args.requests,
                args.warmup,
                base,
            )
    if not args.no_hapi:
        results += run_side(
            "HAPI transaction",
            args.hapi,
            bundle_bodies,
            FHIR_JSON,
            200,
            args.levels,
            args.requests,
            args.warmup,
        )

    hapi = {r.clients: r.rate for r in results if r.side == "HAPI transaction"}
    print()
    print(
        "| side | clients | requests | cases/s | p50 ms | p95 ms | p99 ms | errors | vs HAPI "
        "| server ms (mean) | validation ms (mean) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = f"{r.rate / hapi[r.clients]:.2f}x" if r.clients in hapi else "-"
        inside = f"{r.server['request']:.0f} | {r.server['validation']:.0f}" if r.server else "- | -"
        print(
            f"| {r.side} | {r.clients} | {r.requests} | {r.rate:.1f} | {r.pct(0.5):.0f} | "
            f"{r.pct(0.95):.0f} | {r.pct(0.99):.0f} | {sum(r.errors.values())} | {ratio} | {inside} |"
        )


if __name__ == "__main__":
    main()
