"""Reading HAPI FHIR's $validate answers: shared by the tests that send resources to HAPI."""

from __future__ import annotations

from typing import Any

# Errors that say only "this server does not hold that external terminology". The test server cannot
# load LOINC, RxNorm, ATC or OHDSI (not on Maven Central); for a coding inside a bound CodeableConcept
# HAPI 8.8 reports that as an error, not a warning, even with UnknownCodeSystemWarningValidationSupport
# set to WARNING, with the systems registered as content "not-present" CodeSystems (then the ValueSets
# cannot be expanded) or with fragment CodeSystems stored (HAPI ignores them for http://loinc.org); all
# three were tried. The project coding next to it is still checked (a wrong one is an error), and every
# standard code is checked against shared/terminology.md by tests/unit/test_package_build.py. These
# errors are reported in the warnings file with the others, and counted in the closing note.
UNKNOWN_EXTERNAL_SYSTEM_ERRORS = (
    r"^error: CodeSystem is unknown and can't be validated: (http://loinc\.org|"
    r"http://www\.nlm\.nih\.gov/research/umls/rxnorm|http://www\.whocc\.no/atc|"
    r"http://fhir\.ohdsi\.org/CodeSystem/concepts) for "
)


def _issues(outcome: dict[str, Any], *severities: str) -> list[str]:
    out = []
    for i in outcome.get("issue", []):
        if i["severity"] in severities:
            where = ",".join(i.get("expression", i.get("location", [])))
            out.append(f"{i['severity']}: {i.get('diagnostics', '')} @ {where}")
    return out
