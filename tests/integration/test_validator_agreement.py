"""The local validator and HAPI FHIR's agree on the verdict (errors or none) for the whole corpus.

Every case of tests/contract/corpus.py goes to HAPI (``Resource/$validate?profile=<meta.profile[0]>``,
or ``Bundle/$validate`` for whole bundles, with the package loaded first) and to
``service.validation.Validator``; both verdicts must be equal. HAPI's errors that only say it does
not hold an external terminology ("CodeSystem is unknown and can't be validated" for LOINC, SNOMED CT,
RxNorm, ATC, OHDSI: see test_profiles_in_hapi.py) are not counted: they appear on valid resources too,
and whether the code is in our ValueSet is still checked by both (a code outside it is a separate
error from both). A mismatch prints the case name, the resource and both outcomes.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from service.errors import Issue
from service.fhir.client import FhirClient
from service.validation import Validator
from tests.contract.corpus import Case, corpus

THREADS = 4
UNKNOWN_EXTERNAL_SYSTEM = re.compile(
    r"^CodeSystem is unknown and can't be validated: (http://loinc\.org|http://snomed\.info/sct|"
    r"http://www\.nlm\.nih\.gov/research/umls/rxnorm|http://www\.whocc\.no/atc|"
    r"http://fhir\.ohdsi\.org/CodeSystem/concepts) for "
)
# Cases where HAPI 8.8 is known to be wrong, by case-name pattern, each with its reason. Keep it short.
KNOWN_HAPI_DEFECTS: dict[str, str] = {}

CASES = corpus()


def hapi_errors(outcome: dict[str, Any]) -> list[str]:
    out = []
    for issue in outcome.get("issue", []):
        text = issue.get("diagnostics", "")
        if issue.get("severity") in ("error", "fatal") and not UNKNOWN_EXTERNAL_SYSTEM.search(text):
            out.append(f"{text} @ {','.join(issue.get('expression', issue.get('location', [])))}")
    return out


def local_errors(issues: list[Issue]) -> list[str]:
    return [f"{i.diagnostics} @ {i.expression}" for i in issues if i.severity in ("error", "fatal")]


@pytest.fixture(scope="module")
def hapi_outcomes(package_loaded, hapi_url) -> dict[str, dict[str, Any]]:
    """HAPI's OperationOutcome of every case, fetched on a few threads (one client per thread)."""
    local = threading.local()

    def client() -> FhirClient:
        if not hasattr(local, "client"):
            local.client = FhirClient(hapi_url, timeout=120)
        return local.client

    def one(case: Case) -> tuple[str, dict[str, Any]]:
        if case.kind == "bundle":
            return case.name, client().validate(case.resource)
        return case.name, client().validate(case.resource, profile=case.profile)

    with ThreadPoolExecutor(THREADS) as pool:
        return dict(pool.map(one, CASES))


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator.load()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_verdict_as_hapi(case: Case, hapi_outcomes, validator):
    hapi = hapi_errors(hapi_outcomes[case.name])
    issues = (
        validator.validate_bundle(case.resource)
        if case.kind == "bundle"
        else validator.validate(case.resource)
    )
    ours = local_errors(issues)
    if bool(hapi) == bool(ours):
        return
    defect = next((why for pattern, why in KNOWN_HAPI_DEFECTS.items() if re.search(pattern, case.name)), None)
    if defect:
        pytest.xfail(defect)
    pytest.fail(
        f"{case.name}: HAPI {'errors' if hapi else 'no errors'}, local {'errors' if ours else 'no errors'}\n"
        f"HAPI:  {json.dumps(hapi, indent=1)}\nlocal: {json.dumps(ours, indent=1)}\n"
        f"resource: {json.dumps(case.resource, indent=1)[:6000]}",
        pytrace=False,
    )
