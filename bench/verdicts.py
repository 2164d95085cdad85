"""Every issue the validator gives on three sets of inputs, written as JSON lines, so that two commits
(e.g. before and after a speed change) can be compared issue by issue, not only verdict by verdict:

- the 1551-case corpus (tests/contract/corpus.py: the example resources, their mutations, the case
  Bundles);
- HL7's validator test cases that tests/conformance/hl7_cases.py selects (with their supporting
  profiles; a crash is written as such);
- the benchmark workload: the example cases mapped to Bundles (``--cases``, default 18).

    .venv/bin/python -m bench.verdicts OUT.jsonl
    diff <(git stash; .venv/bin/python -m bench.verdicts /dev/stdout) ...   # or two files: cmp A B
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Iterator
from typing import Any

import orjson

from service.errors import Issue
from service.validation import Validator

NOW = "2026-01-01T00:00:00Z"


def _issues(issues: list[Issue]) -> list[list[Any]]:
    return [[i.severity, i.code, i.expression, i.diagnostics] for i in issues]


def _corpus(validator: Validator) -> Iterator[tuple[str, Any]]:
    from tests.contract.corpus import corpus

    for case in corpus():
        if case.kind == "bundle":
            yield case.name, _issues(validator.validate_bundle(case.resource))
        else:
            yield case.name, _issues(validator.validate(case.resource))


def _hl7(validator: Validator) -> Iterator[tuple[str, Any]]:
    from tests.conformance.hl7_cases import Runner, Suite

    suite = Suite()
    runner = Runner(suite, validator)
    for case in suite.cases():
        try:
            files = tuple(dict.fromkeys([*case.supporting, *([case.profile] if case.profile else [])]))
            checker = runner._validator(files)
            try:
                resource = suite.json(case.file)
            except orjson.JSONDecodeError:
                yield "hl7/" + case.name, "not JSON"
                continue
            profiles = [str(suite.json(case.profile)["url"])] if case.profile else []
            if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
                found = checker.validate_bundle(resource, profiles)
            else:
                found = checker.validate(resource, profiles)
            yield "hl7/" + case.name, _issues(found)
        except Exception as error:  # a crash is a verdict too
            yield "hl7/" + case.name, "CRASH " + "".join(traceback.format_exception_only(error)).strip()


def _workload(validator: Validator, count: int) -> Iterator[tuple[str, Any]]:
    from bench.workload import cases
    from service.case_files import map_case

    for i, case in enumerate(cases(count, prefix="VERDICTS")):
        yield f"workload/{i}", _issues(validator.validate_bundle(map_case(case, now=NOW)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out")
    parser.add_argument("--cases", type=int, default=18, help="workload cases to map and validate")
    args = parser.parse_args()
    validator = Validator.load()
    count = 0
    with open(args.out, "wb") as out:
        for source in (_corpus(validator), _hl7(validator), _workload(validator, args.cases)):
            for name, issues in source:
                out.write(orjson.dumps([name, issues]) + b"\n")
                count += 1
    print(f"{count} inputs written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
