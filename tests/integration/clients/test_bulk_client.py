"""Issue 13: a Bulk Data client that behaves like the IG's reference client (SMART bulk-data-client),
over real HTTP against the running service (``ivclms serve``, the in-process export runner): kick-off
at system, Patient and Group level, status polling that waits what ``Retry-After`` says (within a
deadline, never a fixed sleep), the manifest's fields, downloads whose line counts equal the manifest's
counts, ``_typeFilter``, DELETE cancel (202, then 404 on the status URL). The Group export is run on
HAPI too, over the same Group and resources, and the per-type counts compared.

tests/unit/api/test_bulk_v2.py runs the same flow through Flask's test client; this one goes through
gunicorn, real sockets and the URLs the manifest names (absolute, on the server's own host and port).

Intended differences with HAPI's Group export (each with its reason):
- Provenance: this service exports the Provenance it writes for each case version (the IG: a server
  SHALL include available Provenance); HAPI's Group export holds the Patient compartment, where a
  Provenance pointing at a Patient by ``target`` only is not.
- Group: HAPI's Group export holds the Group resource itself as well; this service exports what
  pertains to the Group's members (the IG's wording), the Group being readable at Group/[id].
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests

from tests.integration.clients.conftest import Loaded, Server

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
DEADLINE_S = 180
HAPI_DEADLINE_S = 900
"""HAPI asks to be polled again after 120 s (Retry-After) and runs its jobs in a scheduler: its own
deadline. Honouring Retry-After is the point; a fixed sleep would not be."""


class BulkClient:
    """What the reference client does, over HTTP with one Session."""

    def __init__(self, token: str | None, deadline_s: float = DEADLINE_S) -> None:
        self.deadline_s = deadline_s
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        self.waited: list[float] = []

    def kick_off(self, url: str, parameters: dict[str, Any] | None = None) -> str:
        if parameters is None:
            resp = self.http.get(url, headers=ASYNC, timeout=120)
        else:
            body = json.dumps(parameters)
            resp = self.http.post(
                url, data=body, headers={**ASYNC, "Content-Type": "application/fhir+json"}, timeout=120
            )
        assert resp.status_code == 202, resp.text
        return str(resp.headers["Content-Location"])

    @staticmethod
    def retry_after(value: str | None) -> float:
        """Retry-After is seconds or an HTTP date (RFC 9110 10.2.3); none: the client's own 1 s."""
        if value is None:
            return 1.0
        if value.strip().isdigit():
            return float(value)
        return max((parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds(), 0.0)

    def poll(self, status_url: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.deadline_s
        while True:
            resp = self.http.get(status_url, headers={"Accept": "application/json"}, timeout=120)
            if resp.status_code == 200:
                return dict(resp.json())
            assert resp.status_code == 202, resp.text
            delay = self.retry_after(resp.headers.get("Retry-After"))
            assert time.monotonic() + delay < deadline, f"export not done within {self.deadline_s} s"
            self.waited.append(delay)
            time.sleep(delay)  # the server said when to come back; the deadline bounds the whole wait

    def download(self, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """The IG's manifest: transactionTime, request, requiresAccessToken, output (type, url, count
        "the number of resources in the file"), error; each file ndjson of its type only."""
        for name in ("transactionTime", "request", "requiresAccessToken", "output", "error"):
            assert name in manifest, name
        assert datetime.fromisoformat(manifest["transactionTime"].replace("Z", "+00:00")).tzinfo is not None
        files: dict[str, list[dict[str, Any]]] = {}
        for item in manifest["output"]:
            assert {"type", "url"} <= set(item)
            headers = {"Accept": "application/fhir+ndjson"}
            if not manifest["requiresAccessToken"]:
                headers["Authorization"] = ""
            resp = self.http.get(item["url"], headers=headers, timeout=120)
            assert resp.status_code == 200, resp.text
            lines = [line for line in resp.text.splitlines() if line.strip()]
            if "count" in item:
                assert len(lines) == item["count"], item
            resources = [json.loads(line) for line in lines]
            assert {r["resourceType"] for r in resources} == {item["type"]}
            files.setdefault(item["type"], []).extend(resources)
        return files

    def cancel(self, status_url: str) -> None:
        """The IG: after the DELETE "the server SHALL return a 404 Not Found error and an associated
        FHIR OperationOutcome" on the polling location."""
        assert self.http.delete(status_url, timeout=60).status_code == 202
        after = self.http.get(status_url, timeout=60)
        assert after.status_code == 404 and after.json()["resourceType"] == "OperationOutcome"


def _counts(files: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    return {t: len(rs) for t, rs in files.items()}


def test_reference_client_flow_against_the_running_service(
    server: Server, loaded: Loaded, access_token: str
) -> None:
    bulk = BulkClient(access_token)
    manifest = bulk.poll(bulk.kick_off(f"{server.base}/$export"))
    assert manifest["request"] == f"{server.base}/$export" and manifest["requiresAccessToken"] is True
    assert manifest["error"] == []
    assert bulk.waited and all(d > 0 for d in bulk.waited)  # it was told to wait, and did
    files = bulk.download(manifest)
    expected = {t: len(loaded.ids(t)) for t in ("Patient", "Condition", "Observation", "Procedure")}
    assert {t: len(files[t]) for t in expected} == expected
    assert {r["id"] for r in files["Provenance"]} == set(loaded.ids("Provenance"))

    patients = bulk.download(
        bulk.poll(bulk.kick_off(f"{server.base}/Patient/$export?_type=Patient,Condition"))
    )
    assert _counts(patients) == {"Patient": expected["Patient"], "Condition": expected["Condition"]}

    size = next(o for o in loaded.of("Observation") if o.get("code", {}).get("coding"))
    coding = size["code"]["coding"][0]
    query = quote(f"Observation?code={coding['system']}|{coding['code']}", safe="")
    filtered = bulk.download(
        bulk.poll(bulk.kick_off(f"{server.base}/$export?_type=Observation&_typeFilter={query}"))
    )
    wanted = {o["id"] for o in loaded.of("Observation") if coding in o.get("code", {}).get("coding", [])}
    assert {o["id"] for o in filtered["Observation"]} == wanted and len(wanted) < len(files["Observation"])

    queued = bulk.kick_off(f"{server.base}/$export")
    bulk.cancel(queued)
    finished = bulk.kick_off(f"{server.base}/$export?_type=Patient")
    bulk.poll(finished)
    bulk.cancel(finished)


def test_group_export_agrees_with_hapi(
    server: Server, hapi_url: str, loaded: Loaded, access_token: str
) -> None:
    (group,) = loaded.ids("Group")
    ours = BulkClient(access_token)
    mine = ours.download(ours.poll(ours.kick_off(f"{server.base}/Group/{group}/$export")))
    hapi = BulkClient(None, HAPI_DEADLINE_S)
    theirs = hapi.download(hapi.poll(hapi.kick_off(f"{hapi_url}/Group/{group}/$export")))
    assert {p["id"] for p in mine["Patient"]} == set(loaded.ids("Patient"))
    assert mine.pop("Provenance")  # see the module's intended differences
    assert {t: sorted(r["id"] for r in rs) for t, rs in mine.items()} == {
        t: sorted(r["id"] for r in rs) for t, rs in theirs.items() if t not in ("Provenance", "Group")
    }
    assert [g["id"] for g in theirs["Group"]] == [group]  # HAPI's extra: the Group itself (see above)
