"""Reading a stored transaction Bundle and the server's transaction-response, entry by entry."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from service.mapping.spec import IDENTIFIER_SYSTEM
from service.sync.outbox import Synced

_LOCATION = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<version>[A-Za-z0-9\-.]{1,64}))?/?$"
)
_ETAG = re.compile(r'^(?:W/)?"?(?P<version>[A-Za-z0-9\-.]{1,64})"?$')


class ResponseError(Exception):
    """The server's answer does not fit the transaction sent (a server or proxy defect, never data)."""


def entry_key(entry: dict[str, Any]) -> str:
    """How ``synced_resources`` names an entry: the business identifier value of a conditional update
    (``Type?identifier=system|value``) or of the resource (an update by server id, ``service.sync.adopt``),
    else the ``Type/id`` the request addresses (Provenance)."""
    path, _, query = str(entry["request"]["url"]).partition("?")
    for name, value in parse_qsl(query):
        if name == "identifier":
            _system, bar, identifier = value.partition("|")
            return identifier if bar else value
    for identifier in entry.get("resource", {}).get("identifier", []):
        if identifier.get("system") == IDENTIFIER_SYSTEM and identifier.get("value"):
            return str(identifier["value"])
    return path


def parse_location(location: str) -> tuple[str, str, str | None] | None:
    """``[base/]Type/id[/_history/v]`` -> (type, id, version); None when it is not such a URL."""
    found = _LOCATION.search(location)
    if found is None:
        return None
    return found["type"], found["id"], found["version"]


def synced(bundle: dict[str, Any], response: dict[str, Any]) -> tuple[list[Synced], int]:
    """Where each resource of ``bundle`` now lives, from the transaction-response (same order as the
    request, FHIR R4 3.1.0.11.2), and how many entries gave no usable location."""
    if response.get("resourceType") != "Bundle" or response.get("type") != "transaction-response":
        raise ResponseError("the answer is not a transaction-response Bundle")
    sent = bundle.get("entry", [])
    answers = response.get("entry", [])
    if len(sent) != len(answers):
        raise ResponseError(f"{len(answers)} answers to {len(sent)} entries")
    found: list[Synced] = []
    unknown = 0
    for entry, answer in zip(sent, answers, strict=True):
        result = answer.get("response") or {}
        status = str(result.get("status", ""))
        if not status.startswith("2"):
            raise ResponseError(f"an entry was answered {status[:3] or 'without a status'}")
        parsed = parse_location(str(result.get("location") or ""))
        if parsed is None:
            unknown += 1
            continue
        resource_type, server_id, version = parsed
        if resource_type != entry["resource"]["resourceType"]:
            raise ResponseError(
                f"a {entry['resource']['resourceType']} entry was answered with a {resource_type}"
            )
        if version is None:
            etag = _ETAG.match(str(result.get("etag") or ""))
            version = etag["version"] if etag else None
        found.append(Synced(entry_key(entry), resource_type, server_id, version))
    return found, unknown
