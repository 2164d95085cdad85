"""Local validation vs HAPI ``$validate``: time per corpus resource, and per whole case Bundle.

Both sides see the same resources (tests/contract/corpus.py). HAPI is warmed up first (one call per
profile) and called one request at a time, so its time is one HTTP round trip of ``$validate``
(the package must already be loaded, e.g. by the integration tests or ``--load``). The local
validator is timed twice: a first pass with a freshly loaded validator (cold invariant memo) and a
second pass (steady state, memo warm), after its one-off load.

    IVCLMS_TEST_HAPI_URL=http://127.0.0.1:8091/fhir .venv/bin/python -m bench.validate_bench [--load]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from service.fhir.client import FhirClient
from service.validation import Validator
from tests.contract.corpus import corpus


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--hapi", default=os.environ.get("IVCLMS_TEST_HAPI_URL", "http://127.0.0.1:8090/fhir")
    )
    parser.add_argument("--load", action="store_true", help="PUT the package into HAPI first")
    parser.add_argument("--sample", type=int, default=0, help="every n-th resource only (0: all)")
    args = parser.parse_args()

    cases = [c for c in corpus() if c.kind == "resource"]
    if args.sample:
        cases = cases[:: args.sample]
    bundles = [c for c in corpus() if c.kind == "bundle" and c.mutation == "valid"]

    load_s = _timed(lambda: Validator.load())
    validator = Validator.load()
    first = [_timed(lambda c=c: validator.validate(c.resource)) for c in cases]
    steady = [_timed(lambda c=c: validator.validate(c.resource)) for c in cases]
    local_bundle = [_timed(lambda b=b: validator.validate_bundle(b.resource)) for b in bundles]

    client = FhirClient(args.hapi, timeout=120)
    if args.load:
        from tests.integration.conftest import package_resources

        for resource in package_resources():
            client.update(resource)
    for profile in dict.fromkeys(c.profile for c in cases):
        client.validate(next(c.resource for c in cases if c.profile == profile), profile=profile)
    hapi = [_timed(lambda c=c: client.validate(c.resource, profile=c.profile)) for c in cases]
    hapi_bundle = [_timed(lambda b=b: client.validate(b.resource)) for b in bundles]
    client.close()

    def ms(values: list[float]) -> str:
        return f"{statistics.mean(values) * 1000:.2f}"

    def p95(values: list[float]) -> str:
        return f"{sorted(values)[int(len(values) * 0.95)] * 1000:.2f}"

    hapi_mean = statistics.mean(hapi)
    print(f"Corpus: {len(cases)} resources, {len(bundles)} case bundles; python {platform.python_version()}")
    print(f"Local validator load (base R4 + package, caches warm): {load_s * 1000:.0f} ms\n")
    print("| what | mean ms | p95 ms | HAPI / local |")
    print("|---|---:|---:|---:|")
    print(f"| HAPI `$validate?profile=` per resource (HTTP round trip) | {ms(hapi)} | {p95(hapi)} | 1 |")
    print(
        f"| local `validate()` per resource, first pass | {ms(first)} | {p95(first)} |"
        f" {hapi_mean / statistics.mean(first):.0f}x |"
    )
    print(
        f"| local `validate()` per resource, steady state | {ms(steady)} | {p95(steady)} |"
        f" {hapi_mean / statistics.mean(steady):.0f}x |"
    )
    print(f"| HAPI `Bundle/$validate` per case bundle | {ms(hapi_bundle)} | - | 1 |")
    print(
        f"| local `validate_bundle()` per case bundle | {ms(local_bundle)} | - |"
        f" {statistics.mean(hapi_bundle) / statistics.mean(local_bundle):.0f}x |"
    )
    print("\nCommand: IVCLMS_TEST_HAPI_URL=... .venv/bin/python -m bench.validate_bench")


if __name__ == "__main__":
    main()
