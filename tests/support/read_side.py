"""The nine examples stored through the API and read back as FHIR, with the tokens and the systems the
read-side tests (gate, bulk export, searches) ask with."""

from __future__ import annotations

from typing import Any

from tests.support.examples import EXAMPLES
from tests.tokens import bearer

FULL = bearer("system/*.cruds")
HOSPITAL_A = "urn:ivclms:example:hospital-a"
HOSPITAL_B = "urn:ivclms:example:hospital-b"
TUMOUR_SIZE = "http://loinc.org|21889-1"


def load_examples(client) -> list[dict[str, Any]]:
    """Store the nine examples; their FHIR Bundles as the read side holds them (ids from fullUrl)."""
    bundles = []
    for path in EXAMPLES:
        resp = client.post("/cases", data=path.read_text(), headers=FULL, content_type="application/json")
        assert resp.status_code == 201, resp.get_json()
        bundle = client.get(
            resp.headers["Location"], headers={**FULL, "Accept": "application/fhir+json"}
        ).get_json()
        bundles.append(bundle)
    return bundles
