"""HL7's validator test cases (``org.hl7.fhir.testcases:fhir-test-cases``) as a conformance suite.

The jar (placed by ``scripts/fhir-test-cases``) holds ``validator/manifest.json``: per test case the
file to validate, how to set the validator up, and the outcome each validator implementation is
expected to give (``java`` is HL7's reference validator). This module selects the cases a base R4
validator can judge and compares our verdict with the Java validator's:

- R4 (``version`` 4.0.x), JSON, not switched off (``use-test: false``);
- none of the options that change how the reference validates (``SPECIAL_OPTIONS``: extra packages,
  reference fetchers, logical models, best-practice modes, ...) and none of the modules for things
  that are not base R4 validation (``OTHER_MODULES``: terminology server, CDS Hooks, smart health
  cards, signatures, JSON5, cross-version, ...);
- no error in the expected outcome that came from the terminology server (an issue carrying the
  ``operationoutcome-issue-server`` extension): such a verdict needs a terminology server;
- ``supporting``/``profiles`` files and the ``profile`` step are taken when the files are in the jar
  as JSON (a few are XML: not loadable here); each set is loaded into a validator of its own
  (``Validator.with_resources``). The profile step is a case of its own, named ``<name>#profile``.

A file that is not JSON counts as one error (the service refuses it with 400, the reference reports a
fatal parse error); a UTF-8 byte order mark is allowed, as the reference allows it.

Verdict = any issue of severity error/fatal. Where the manifest gives ``errorCount`` the number of
errors is compared too.

    python -m tests.conformance.hl7_cases            # confusion matrix and every disagreement
"""

from __future__ import annotations

import sys
import traceback
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from service.validation import Validator
from service.validation.fetch import test_cases_jar

PREFIX = "org/hl7/fhir/testcases/validator/"
SERVER_EXT = "http://hl7.org/fhir/StructureDefinition/operationoutcome-issue-server"
SPECIAL_OPTIONS = frozenset(
    {
        "packages",
        "fetcher",
        "logical",
        "matchetype",
        "package-map",
        "wrong-displays",
        "assumeValidRestReferences",
        "validateReference",
        "examples",
        "security-checks",
        "validateContains",
        "allow-comments",
        "supporting5",
        "advisor",
        "sct",
        "allowed-extension-domain",
        "fhir-validator-cli-options",
        "noHtmlInMarkdown",
        "no-experimental-content",
        "ips",
        "for-publication",
        "r5-bundle-relative-reference-policy",
        "certificate",
        "ids-in-errors",
        "scoring",
        "new-xver-mode",
        "fetch-canonicals",
        "language",
        "best-practice",
        "bundle-param",
        "default-version",
        "enforceAggregationOutsideBundles",
        "tx-dependent",
        "generate-shapshot",
        "close-up",
        "suppress",
        "no-tx",
    }
)
OTHER_MODULES = frozenset(
    {
        "tx",
        "tx-advanced",
        "cdshooks",
        "shc",
        "matchetype",
        "json5",
        "dsig",
        "logical",
        "xver",
        "package-versioning",
        "scoring",
    }
)


@dataclass
class Case:
    name: str
    file: str
    supporting: tuple[str, ...]
    profile: str | None  # file of the profile to validate against (the manifest's profile step)
    expected_errors: int
    error_count: int | None  # the manifest's errorCount, when it gives one
    expected: list[dict[str, Any]] = field(default_factory=list)  # the reference's issues

    @property
    def kind(self) -> str:
        return "with profiles" if self.supporting or self.profile else "base"


@dataclass
class Result:
    case: Case
    errors: int
    messages: list[str]
    crash: str | None = None

    @property
    def invalid(self) -> bool:
        return self.crash is not None or self.errors > 0

    @property
    def agrees(self) -> bool:
        if self.crash is not None:
            return False
        if self.case.error_count is not None:
            return self.errors == self.case.error_count
        return (self.errors > 0) == (self.case.expected_errors > 0)


class Suite:
    """The jar's validator folder, read in place."""

    def __init__(self, jar: Path | None = None) -> None:
        self.jar = jar or test_cases_jar()
        self._zip = zipfile.ZipFile(self.jar)
        self._names = set(self._zip.namelist())
        self.manifest: dict[str, Any] = self.json("manifest.json")

    def has(self, name: str) -> bool:
        return PREFIX + name in self._names

    def loadable(self, name: str) -> bool:
        return name.endswith(".json") and self.has(name)

    def json(self, name: str) -> Any:
        return orjson.loads(self._zip.read(PREFIX + name).removeprefix(b"\xef\xbb\xbf"))

    def outcome(self, spec: Any) -> dict[str, Any]:
        if isinstance(spec, dict):
            found: dict[str, Any] = spec.get("outcome", spec)
            return found
        loaded: dict[str, Any] = self.json("outcomes/" + str(spec))
        return loaded

    def cases(self) -> Iterator[Case]:
        for t in self.manifest["test-cases"]:
            if not str(t.get("version", "")).startswith("4.0") or not str(t["file"]).endswith(".json"):
                continue
            if t.get("use-test") is False or t.get("module") in OTHER_MODULES or SPECIAL_OPTIONS & set(t):
                continue
            supporting = tuple([*t.get("supporting", []), *t.get("profiles", [])])
            if not all(self.loadable(s) for s in supporting) or "java" not in t:
                continue
            yield from self._case(t["name"], t, supporting, None, t["java"], t.get("errorCount"))
            step = t.get("profile")
            if isinstance(step, dict) and "java" in step and self.loadable(str(step.get("source"))):
                more = tuple(s for s in step.get("supporting", []) if s not in supporting)
                if all(self.loadable(s) for s in more):
                    yield from self._case(
                        t["name"] + "#profile",
                        t,
                        supporting + more,
                        str(step["source"]),
                        step["java"],
                        step.get("errorCount"),
                    )

    def _case(
        self,
        name: str,
        t: dict[str, Any],
        supporting: tuple[str, ...],
        profile: str | None,
        spec: Any,
        count: Any,
    ) -> Iterator[Case]:
        issues = self.outcome(spec).get("issue", [])
        bad = [i for i in issues if i.get("severity") in ("error", "fatal")]
        if any(any(e.get("url") == SERVER_EXT for e in i.get("extension", [])) for i in bad):
            return  # the reference's verdict came from a terminology server
        yield Case(
            name=name,
            file=str(t["file"]),
            supporting=supporting,
            profile=profile,
            expected_errors=len(bad),
            error_count=int(count) if isinstance(count, int) else None,
            expected=issues,
        )


class Runner:
    def __init__(self, suite: Suite, validator: Validator | None = None) -> None:
        self.suite = suite
        self.validator = validator or Validator.load()
        self._with: dict[tuple[str, ...], Validator] = {}

    def _validator(self, files: tuple[str, ...]) -> Validator:
        if not files:
            return self.validator
        if files not in self._with:
            resources = []
            for name in files:
                data = self.suite.json(name)
                entries = (
                    [e.get("resource") for e in data.get("entry", [])]
                    if data.get("resourceType") == "Bundle"
                    else [data]
                )
                resources.extend(r for r in entries if isinstance(r, dict))
            self._with[files] = self.validator.with_resources(resources)
        return self._with[files]

    def run(self, case: Case) -> Result:
        try:
            files = tuple(dict.fromkeys([*case.supporting, *([case.profile] if case.profile else [])]))
            validator = self._validator(files)
            try:
                resource = self.suite.json(case.file)
            except orjson.JSONDecodeError as error:
                return Result(case, 1, [f"not JSON: {error}"])
            profiles = [str(self.suite.json(case.profile)["url"])] if case.profile else []
            if isinstance(resource, dict) and resource.get("resourceType") == "Bundle":
                issues = validator.validate_bundle(resource, profiles)
            else:
                issues = validator.validate(resource, profiles)
        except Exception as error:  # a crash is a result of its own, counted and shown
            return Result(case, 0, [], crash="".join(traceback.format_exception_only(error)).strip())
        bad = [i for i in issues if i.severity in ("error", "fatal")]
        return Result(case, len(bad), [f"{i.expression}: {i.diagnostics}" for i in bad])


def matrix(results: list[Result]) -> str:
    """Confusion matrix (the reference's verdict by ours) per selection and overall."""
    lines = []
    for kind in ("base", "with profiles", "all"):
        rows = [r for r in results if kind in ("all", r.case.kind)]
        c = Counter((r.case.expected_errors > 0, r.invalid, r.crash is not None) for r in rows)
        agree = sum(r.agrees for r in rows)
        crashes = sum(r.crash is not None for r in rows)
        lines += [
            f"{kind}: {len(rows)} cases, agreement {agree}/{len(rows)}"
            f" ({100 * agree / max(len(rows), 1):.1f}%), crashes {crashes}",
            "  reference \\ ours    errors  no errors",
            f"  errors            {c[True, True, False] + c[True, True, True]:>7}"
            f"  {c[True, False, False]:>9}",
            f"  no errors         {c[False, True, False] + c[False, True, True]:>7}"
            f"  {c[False, False, False]:>9}",
        ]
    return "\n".join(lines)


def run_all(suite: Suite | None = None, runner: Runner | None = None) -> list[Result]:
    suite = suite or Suite()
    runner = runner or Runner(suite)
    return [runner.run(case) for case in suite.cases()]


def main(argv: list[str]) -> int:
    suite = Suite()
    runner = Runner(suite)
    results = run_all(suite, runner)
    verbose = "-q" not in argv
    if verbose:
        for r in results:
            if not r.agrees:
                want = f"{r.case.expected_errors} errors" + (
                    f" (errorCount {r.case.error_count})" if r.case.error_count is not None else ""
                )
                crash = f" CRASH {r.crash}" if r.crash else ""
                print(f"{r.case.name}: reference {want}, ours {r.errors}{crash}")
                for m in r.messages[:6]:
                    print(f"    ours: {m}")
                for i in r.case.expected:
                    if i.get("severity") in ("error", "fatal"):
                        text = i.get("details", {}).get("text", "")
                        print(f"    ref:  {(i.get('expression') or ['-'])[0]}: {text[:200]}")
    print(matrix(results))
    skipped = {e for v in [runner.validator, *runner._with.values()] for e in v.invariants.unsupported}
    print(f"invariants fhirpathpy could not evaluate: {len(skipped)}")
    for expression in sorted(skipped):
        print(f"    {expression}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
