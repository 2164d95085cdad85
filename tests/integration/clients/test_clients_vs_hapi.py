"""Issue 13: third-party FHIR clients (fhirpy, fhirclient, fhir-kit-client) drive every interaction,
search parameter, _include/_revinclude and operation this service's CapabilityStatement declares (read
at test time from /fhir/metadata), against the running service (``ivclms serve``) and against HAPI FHIR
holding the very same resources at the same ids. Each client's outcome on the two servers is compared.

Intended differences, each with its reason (``INTENDED`` below, checked to still be differences):
- a search parameter HAPI does not declare for the type (read off HAPI's own CapabilityStatement) is
  this project's (e.g. ``date`` on Patient: the clinical date); HAPI refuses it (400), so only this
  service's answer is checked (it must find what it was asked for);
- the service's own records that are not data (AuditEvent, the Provenance it writes per case
  version, the maintained Groups) were copied to HAPI as plain resources, so HAPI's reverse links
  into them are the same but its ``$everything`` reaches other types.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.clients.adapters import ADAPTERS, Outcome
from tests.integration.clients.conftest import Loaded, Server
from tests.integration.clients.operations import Op, plan

REPORT = Path(__file__).resolve().parents[3] / ".run" / "reports" / "clients.tsv"

INTENDED: dict[str, str] = {
    r"AuditEvent .*": "the service's own audit trail of requests; HAPI holds none of it",
    r"Group read": "the service computes its Groups from the current members: no meta.versionId "
    "(optional in R4; vread and history are not declared for Group)",
    r"Group search(-type| _id| POST _search)": "the service serves its own maintained Groups, plus the "
    "cohort Group (ivclms-cohort) that was not copied to HAPI (a fixed id on a shared server)",
}
"""Operation key (regular expression) -> why this service answers differently from HAPI."""


KNOWN: dict[str, str] = {}
"""Defects the clients found and a change leaves to their owner: reported in the table, not hidden
(an entry that stops differing fails the test, so the list cannot go stale). Empty: the last three
(AuditEvent ``_count=0`` and POST ``_search``, Procedure ``date`` over an ongoing performedPeriod) are
fixed; the date case also has its own operation now, not left to the value drawn from the data."""
SOMETIMES: set[str] = set()
"""KNOWN entries whose difference depends on the value drawn from this run's data."""


@pytest.fixture(scope="package")
def capability(server: Server, access_token: str) -> dict[str, Any]:
    got = requests.get(
        f"{server.base}/metadata", headers={"Authorization": f"Bearer {access_token}"}, timeout=60
    )
    assert got.status_code == 200, got.text
    return dict(got.json())


@pytest.fixture(scope="package")
def hapi_declares(hapi_url: str) -> dict[str, set[str]]:
    """Search parameter names per type, from HAPI's own CapabilityStatement (an oracle we did not write)."""
    statement = requests.get(f"{hapi_url}/metadata", timeout=120).json()
    return {
        r["type"]: {p["name"] for p in r.get("searchParam", [])} for r in statement["rest"][0]["resource"]
    }


@pytest.fixture(scope="package")
def ops(capability: dict[str, Any], loaded: Loaded) -> list[Op]:
    return plan(capability, loaded)


def _project_param(op: Op, hapi_declares: dict[str, set[str]]) -> bool:
    if op.kind != "search" or op.type is None:
        return False
    names = {n for n, _ in op.params} - {"_id", "_count", "_include", "_revinclude"}
    if names - hapi_declares.get(op.type, set()):
        return True
    for name, val in op.params:  # _include=Source:param / _revinclude=Source:param
        if name in ("_include", "_revinclude"):
            source, param = val.split(":")[:2]
            if param not in hapi_declares.get(source, set()):
                return True
    return False


def _comparable(outcome: Outcome, op: Op) -> dict[str, Any]:
    keep = {"status": outcome.get("status")}
    if op.kind in ("read", "vread"):
        keep |= {"id": outcome.get("id"), "version": outcome.get("version")}
    elif op.kind in ("search", "history-instance", "history-type", "operation", "batch", "transaction"):
        match = set(outcome.get("match") or [])
        keep |= {
            "match": sorted(match),
            # Includes are per page (R4 search.html), so a server with smaller pages includes a match of
            # another page again: compared as the set of included resources that are not matches.
            "include": sorted(set(outcome.get("include") or []) - match),
            "statuses": outcome.get("statuses"),
        }
        if ("_count", "1") in op.params:  # default page sizes are the server's choice; _count=1 is not
            keep["pages"] = outcome.get("pages")
        keep["total"] = outcome.get("total")
    return keep


def _differences(
    ops: list[Op], ours: list[Outcome], hapis: list[Outcome], hapi_declares: dict[str, set[str]]
) -> tuple[list[str], list[tuple[str, str, str]]]:
    """(unexpected differences, table rows: key, service result, HAPI result)."""
    unexpected, rows = [], []
    for op, mine, theirs in zip(ops, ours, hapis, strict=True):
        a, b = _comparable(mine, op), _comparable(theirs, op)
        if a.get("total") is None or b.get("total") is None:  # total is optional (R4 Bundle.total)
            a.pop("total", None), b.pop("total", None)
        reason = next((why for pattern, why in INTENDED.items() if re.fullmatch(pattern, op.key)), None)
        if _project_param(op, hapi_declares):
            found = bool(mine.get("match") or mine.get("total"))
            ok = mine.get("status") == 200 and found == op.found
            rows.append(
                (op.key, "pass" if ok else f"FAIL {a}", f"differs: HAPI {b['status']} (not a HAPI param)")
            )
            if not ok:
                unexpected.append(f"{op.key}: expected {'matches' if op.found else 'none'}: {mine}")
            continue
        known = next((why for pattern, why in KNOWN.items() if re.fullmatch(pattern, op.key)), None)
        if known:
            rows.append((op.key, f"FAILS: {known}", "pass"))
            if a == b and any(re.fullmatch(p, op.key) for p in SOMETIMES):
                rows[-1] = (op.key, "pass (listed in KNOWN)", "pass")
            elif a == b or (
                mine.get("status") == 200 and not any(re.fullmatch(p, op.key) for p in SOMETIMES)
            ):
                unexpected.append(f"{op.key}: listed in KNOWN but now answers {a}: remove it from KNOWN")
        elif a == b:
            rows.append((op.key, "pass", "pass"))
        elif reason:
            rows.append((op.key, "pass", f"differs: {reason}"))
            if not isinstance(mine.get("status"), int) or mine["status"] >= 400:
                unexpected.append(f"{op.key}: an intended difference, but the service failed: {a}")
        else:
            rows.append((op.key, f"differs {a}", f"{b}"))
            unexpected.append(f"{op.key}: {_delta(a, b)}")
    return unexpected, rows


def _delta(a: dict[str, Any], b: dict[str, Any]) -> str:
    """What differs, briefly: lists as what only one side has."""
    parts = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if x == y:
            continue
        if isinstance(x, list) and isinstance(y, list):
            parts.append(
                f"{key}: only service {sorted(set(x) - set(y))}, only HAPI {sorted(set(y) - set(x))}"
            )
        else:
            parts.append(f"{key}: service {x!r}, HAPI {y!r}")
    return "; ".join(parts)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_client_sees_the_service_as_it_sees_hapi(
    adapter, server: Server, hapi_url: str, access_token: str, ops: list[Op], hapi_declares
) -> None:
    ours = adapter(server.base, access_token).run(ops)
    hapis = adapter(hapi_url, None).run(ops)
    unexpected, rows = _differences(ops, ours, hapis, hapi_declares)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with REPORT.open("a", encoding="utf-8") as out:
        out.writelines(f"{adapter.name}\t{k}\t{s}\t{h}\n" for k, s, h in rows)
    assert not unexpected, f"{adapter.name}: {len(unexpected)} differences\n" + "\n".join(unexpected)
