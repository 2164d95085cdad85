"""Resources the pull merged from the FHIR server are updated where they live.

A plain resource an EHR wrote on the server (a follow-up Observation without our business identifier)
becomes case data through the pull; when the worker then sends the case, a conditional update by
identifier would not find it and would create a second copy beside it. So an entry whose business
identifier the pull merged from this server is sent as ``PUT Type/<server id>``: the EHR's resource
gains our identifier and profile in place. Entries the server already knows by identifier resolve to
the same resource either way.
"""

from __future__ import annotations

import copy
from typing import Any

from sqlalchemy import Connection, select

from service.store.pull_tables import pulled_resources
from service.sync.bundles import entry_key


def pulled_ids(conn: Connection, server_url: str, case_ref: str) -> dict[str, tuple[str, str]]:
    """Business identifier -> (type, server id) of what the pull merged into the case from this server."""
    rows = conn.execute(
        select(
            pulled_resources.c.identifier, pulled_resources.c.resource_type, pulled_resources.c.server_id
        ).where(pulled_resources.c.server_url == server_url, pulled_resources.c.case_ref == case_ref)
    )
    return {r.identifier: (r.resource_type, r.server_id) for r in rows}


def addressed(bundle: dict[str, Any], pulled: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """``bundle`` with the entries the pull merged addressed by server id (a copy when any is)."""
    moves = {
        position: pulled[key]
        for position, entry in enumerate(bundle.get("entry", []))
        if (key := entry_key(entry)) in pulled and pulled[key][0] == entry["resource"]["resourceType"]
    }
    if not moves:
        return bundle
    out = copy.deepcopy(bundle)
    for position, (resource_type, server_id) in moves.items():
        entry = out["entry"][position]
        entry["resource"]["id"] = server_id
        entry["request"] = {"method": "PUT", "url": f"{resource_type}/{server_id}"}
    return out
