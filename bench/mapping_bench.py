"""Mapping throughput on one core: case JSON -> validated, profiled transaction Bundle, against the
floor (orjson loads + dumps of the same Bundle) and fhir.resources (the same Bundle parsed into
``fhir.resources.R4B`` models and serialised back), at two workload sizes.

Every side runs in a fresh child process, one after the other, so each has one core to itself; its
imports and one-off loads (validator definitions, mapping spec, model classes: one warm-up item)
stay outside the timed loop, while the validator's invariant memo starts empty. The input is prepared
once per size in the parent: the example cases multiplied under fresh ids (bench/workload.py) as
case JSON, and the Bundles they map to (the peers' input). Each side starts from bytes and ends at
bytes:

- service: ``orjson.loads`` -> ``validate_case`` -> ``case_to_bundle`` -> ``Validator.validate_bundle``
  (must find no errors) -> ``orjson.dumps``; the time of each stage is reported too.
- fhir.resources: ``orjson.loads`` -> ``Bundle.model_validate`` -> ``model_dump_json``.
- floor: ``orjson.loads`` -> ``orjson.dumps``.

``--profile N`` also profiles the service side on N cases (cProfile) and prints the top functions.
``--baseline DIR`` also runs the service side from another checkout (e.g. ``git worktree add`` of the
commit before a change), right before this one's, on the same input: a before/after in one run, as
ratios to the same floor. ``--repeat N`` runs every side N times in turn and keeps each side's fastest
run (the machine may be shared: the minimum is the run least disturbed by others).

    .venv/bin/python -m bench.mapping_bench --sizes 100 1000 [--profile 200] [--baseline DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import orjson

NOW = "2026-01-01T00:00:00Z"

_CHILD_HEAD = """
import sys, time, orjson
lines = open(sys.argv[1], "rb").read().splitlines()
"""

CHILD_SERVICE = (
    _CHILD_HEAD
    + """
from service.mapping.forward import case_to_bundle
from service.model import validate_case
from service.validation import Validator
from service.validation.gate import errors
validator = Validator.load()
now = sys.argv[2]
validator.validate_bundle(case_to_bundle(validate_case(orjson.loads(lines[0])), now=now))  # one-off loads
import gc; gc.collect(); gc.freeze()  # as `ivclms serve` does once the application is built
stages = [0.0, 0.0, 0.0, 0.0]
clock = time.perf_counter
start = clock()
for line in lines:
    t0 = clock()
    case = validate_case(orjson.loads(line))
    t1 = clock()
    bundle = case_to_bundle(case, now=now)
    t2 = clock()
    found = errors(validator.validate_bundle(bundle))
    t3 = clock()
    out = orjson.dumps(bundle)
    t4 = clock()
    if found:
        raise SystemExit(f"profile errors: {found[:3]}")
    stages[0] += t1 - t0; stages[1] += t2 - t1; stages[2] += t3 - t2; stages[3] += t4 - t3
elapsed = clock() - start
print(len(lines), elapsed, *stages)
"""
)

CHILD_FHIR_RESOURCES = (
    _CHILD_HEAD
    + """
from fhir.resources.R4B.bundle import Bundle
Bundle.model_validate(orjson.loads(lines[0])).model_dump_json()  # builds the model classes once
start = time.perf_counter()
for line in lines:
    out = Bundle.model_validate(orjson.loads(line)).model_dump_json()
elapsed = time.perf_counter() - start
print(len(lines), elapsed)
"""
)

CHILD_FLOOR = (
    _CHILD_HEAD
    + """
start = time.perf_counter()
for line in lines:
    out = orjson.dumps(orjson.loads(line))
elapsed = time.perf_counter() - start
print(len(lines), elapsed)
"""
)

CHILD_PROFILE = """
import cProfile, io, pstats, sys, orjson
from service.mapping.forward import case_to_bundle
from service.model import validate_case
from service.validation import Validator
lines = open(sys.argv[1], "rb").read().splitlines()[: int(sys.argv[3])]
validator = Validator.load()
validator.validate_bundle(case_to_bundle(validate_case(orjson.loads(lines[0])), now=sys.argv[2]))
profile = cProfile.Profile()
profile.enable()
for line in lines:
    validator.validate_bundle(case_to_bundle(validate_case(orjson.loads(line)), now=sys.argv[2]))
profile.disable()
for key in ("tottime", "cumulative"):
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats(key).print_stats(12)
    print(out.getvalue())
"""


def _prepare(tmp: Path, size: int) -> tuple[Path, Path, int]:
    """Case JSON lines and the Bundle lines they map to; (cases file, bundles file, mean Bundle entries)."""
    from bench.workload import cases
    from service.case_files import map_case

    tag = uuid.uuid4().hex[:6].upper()
    case_file, bundle_file = tmp / f"cases-{size}.ndjson", tmp / f"bundles-{size}.ndjson"
    entries = 0
    with case_file.open("wb") as cf, bundle_file.open("wb") as bf:
        for case in cases(size, prefix=f"M{tag}"):
            bundle = map_case(case, now=NOW)
            entries += len(bundle["entry"])
            cf.write(orjson.dumps(case) + b"\n")
            bf.write(orjson.dumps(bundle) + b"\n")
    return case_file, bundle_file, round(entries / size)


def _child(code: str, *args: str, cwd: str | None = None) -> list[float]:
    """One side in a fresh interpreter; ``cwd`` is the checkout whose ``service`` it imports."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, cwd=cwd
    )
    return [float(x) for x in result.stdout.split()]


def _fastest(runs: list[list[float]]) -> list[float]:
    """The run with the least elapsed time (second field)."""
    return min(runs, key=lambda r: r[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--profile", type=int, default=0, help="cProfile the service side on N cases")
    parser.add_argument("--baseline", help="another checkout whose service side runs too (before/after)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side, fastest kept")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, python {platform.python_version()}, "
        f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    rows: list[dict[str, Any]] = []
    profile_text = ""
    services = ["baseline", "service"] if args.baseline else ["service"]
    sides = [*services, "fhir.resources", "floor"]
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            case_file, bundle_file, entries = _prepare(Path(tmp), size)
            row: dict[str, Any] = {"size": size, "entries": entries}
            runs: dict[str, list[list[float]]] = {side: [] for side in sides}
            here = str(Path(__file__).resolve().parents[1])
            for _ in range(args.repeat):
                if args.baseline:
                    runs["baseline"].append(_child(CHILD_SERVICE, str(case_file), NOW, cwd=args.baseline))
                runs["service"].append(_child(CHILD_SERVICE, str(case_file), NOW, cwd=here))
                runs["fhir.resources"].append(_child(CHILD_FHIR_RESOURCES, str(bundle_file)))
                runs["floor"].append(_child(CHILD_FLOOR, str(bundle_file)))
            row.update({side: _fastest(r) for side, r in runs.items()})
            rows.append(row)
            print(json.dumps(row))
        if args.profile:
            case_file, _, _ = _prepare(Path(tmp), args.profile)
            argv = [sys.executable, "-c", CHILD_PROFILE, str(case_file), NOW, str(args.profile)]
            profile_text = subprocess.run(argv, check=True, capture_output=True, text=True).stdout

    print()
    print("| cases | side | time s | cases/s | ms/case | floor / side |")
    print("|---:|---|---:|---:|---:|---:|")
    for row in rows:
        floor_rate = row["floor"][0] / row["floor"][1]
        for side in sides:
            count, elapsed = row[side][:2]
            print(
                f"| {row['size']} | {side} | {elapsed:.2f} | {count / elapsed:,.1f} | "
                f"{elapsed / count * 1000:.2f} | {floor_rate / (count / elapsed):,.0f}x |"
            )
    print()
    print("Service stages, ms/case:")
    print("| cases | side | validate_case | case_to_bundle | validate_bundle | orjson.dumps |")
    print("|---:|---|---:|---:|---:|---:|")
    for row in rows:
        for side in services:
            count, _, *stages = row[side]
            print(
                f"| {row['size']} | {side} | " + " | ".join(f"{s / count * 1000:.2f}" for s in stages) + " |"
            )
    print(f"\n(~{rows[0]['entries']} entries per Bundle)")
    if profile_text:
        print(f"\ncProfile of the service side, {args.profile} cases:\n")
        print(profile_text)


if __name__ == "__main__":
    main()
