"""Each third-party client runs the suite's operations through its own API and reports one neutral
outcome per operation, so the same operation can be compared between this service and HAPI.

Outcome: ``status`` (the HTTP status, or the client's error class where the client hides the status),
and for a resource ``id``/``version``, for a Bundle ``type``, ``match``/``include`` (``Type/id`` in
order, over every page followed), ``statuses`` (entry response codes), ``pages``, ``total``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from fhirclient.models.bundle import Bundle as FcBundle
from fhirclient.models.fhirelementfactory import FHIRElementFactory
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import (
    AuthorizationError,
    ForbiddenError,
    MultipleResourcesFound,
    OperationOutcome,
    ResourceNotFound,
)
from fhirpy.base.utils import parse_pagination_url

from tests.integration.clients.operations import Op

JS = Path(__file__).resolve().parents[2] / "clients" / "js"
KICKOFF = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
Outcome = dict[str, Any]


def summary(pages: list[dict[str, Any]]) -> Outcome:
    """A Bundle (and the pages after it) as an outcome."""
    first = pages[0]
    entries = [e for page in pages for e in page.get("entry", [])]

    def ref(entry: dict[str, Any]) -> str:
        return f"{entry['resource']['resourceType']}/{entry['resource']['id']}"

    return {
        "status": 200,
        "type": first.get("type", first.get("resourceType")),
        "total": first.get("total"),
        "match": [
            ref(e) for e in entries if "resource" in e and e.get("search", {}).get("mode") != "include"
        ],
        "include": [
            ref(e) for e in entries if "resource" in e and e.get("search", {}).get("mode") == "include"
        ],
        "statuses": [e["response"]["status"].split()[0] for e in entries if "response" in e],
        "next": any(link["relation"] == "next" for link in pages[-1].get("link", [])),
        "pages": len(pages),
    }


def _resource(body: dict[str, Any]) -> Outcome:
    version = body.get("meta", {}).get("versionId")
    return {"status": 200, "id": f"{body['resourceType']}/{body.get('id')}", "version": version}


def _cancel(response: requests.Response | None, location: str | None, token: str | None) -> None:
    """An export kicked off only to see the 202 is cancelled at once (leaves no job behind)."""
    where = location or (response.headers.get("Content-Location") if response is not None else None)
    if where:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        requests.delete(where, headers=headers, timeout=60)


class FhirpyAdapter:
    """fhirpy's sync client: searchsets (``fetch_all`` follows next links, ``count()`` is _count=0),
    ``execute`` for what it has no method for (vread, history, bundles, operations)."""

    name = "fhirpy"

    def __init__(self, base: str, token: str | None) -> None:
        self.token = token
        self.client = SyncFHIRClient(
            base,
            authorization=f"Bearer {token}" if token else None,
            requests_config={"timeout": 120},
        )

    def run(self, ops: Iterable[Op]) -> list[Outcome]:
        return [self._guarded(op) for op in ops]

    def _guarded(self, op: Op) -> Outcome:
        errors: dict[type[Exception], int] = {
            ResourceNotFound: 404,
            AuthorizationError: 401,
            ForbiddenError: 403,
            MultipleResourcesFound: 412,
        }
        try:
            return self._run(op)
        except tuple(errors) as error:
            return {"status": errors[type(error)]}
        except OperationOutcome:
            return {"status": "error: OperationOutcome"}

    def _run(self, op: Op) -> Outcome:
        c = self.client
        if op.kind == "capabilities":
            return summary([c.execute("metadata", method="get")])
        if op.kind == "read" and op.headers:
            body, status = c._do_request(
                "get", f"{op.type}/{op.id}", extra_headers=op.headers, returning_status=True
            )
            return {"status": status} if body is None else _resource(body)
        if op.kind == "read":
            return _resource(c.reference(op.type, op.id).to_resource().serialize())
        if op.kind == "vread":
            return _resource(c.execute(f"{op.type}/{op.id}/_history/{op.version}", method="get"))
        if op.kind == "search":
            search = c.resources(op.type).search(**_grouped(op.params))
            if dict(op.params).get("_count") == "0":
                return {"status": 200, "total": search.count()}
            if op.post:
                return summary(
                    self._pages(c.execute(f"{op.type}/_search", method="post", params=_grouped(op.params)))
                )
            pages = [search.fetch_raw()]
            while (nxt := _next(pages[-1])) and len(pages) < 200:
                pages.append(c._fetch_resource(*parse_pagination_url(nxt)))  # fhirpy's own paging
            return summary(pages)
        if op.kind == "history-instance":
            return summary([c.execute(f"{op.type}/{op.id}/_history", method="get")])
        if op.kind == "history-type":
            return summary([c.execute(f"{op.type}/_history", method="get")])
        if op.kind in ("batch", "transaction"):
            return summary([c.execute("", method="post", data=op.body)])
        if op.kind == "operation":
            return summary(self._pages(c.execute(f"{op.type}/{op.id}/{op.name}", method="get")))
        if op.kind == "kickoff":
            path = "/".join(p for p in (op.type, op.id, "$export") if p)
            body, status = c._do_request("get", path, extra_headers=KICKOFF, returning_status=True)
            return {"status": status}
        raise AssertionError(op.kind)

    def _pages(self, first: dict[str, Any]) -> list[dict[str, Any]]:
        pages = [first]
        while (nxt := _next(pages[-1])) and len(pages) < 200:
            pages.append(self.client._fetch_resource(*parse_pagination_url(nxt)))
        return pages


def _next(bundle: dict[str, Any]) -> str | None:
    return next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)


def _grouped(params: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in params:
        out.setdefault(name, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


class FhirclientAdapter:
    """SMART's fhirclient: its models (strict R4 parsing: an answer that is not valid R4 JSON fails
    here), ``Bundle.read_from`` (what its FHIRSearch runs; the query is built here, as FHIRSearch's
    grammar cannot repeat a name) with ``iter_pages``, and ``server`` requests where it has no API."""

    name = "fhirclient"

    def __init__(self, base: str, token: str | None) -> None:
        self.server = FHIRServer(None, base_uri=base)
        if token:
            self.server.session.headers["Authorization"] = f"Bearer {token}"
        self.base = base

    def run(self, ops: Iterable[Op]) -> list[Outcome]:
        return [self._guarded(op) for op in ops]

    def _guarded(self, op: Op) -> Outcome:
        try:
            return self._run(op)
        except requests.HTTPError as error:
            return {"status": error.response.status_code}
        except Exception as error:
            response = getattr(error, "response", None)
            if isinstance(response, requests.Response):
                return {"status": response.status_code}
            raise

    def _model(self, body: dict[str, Any]) -> Any:
        return FHIRElementFactory.instantiate(body["resourceType"], body)

    def _json(self, path: str, headers: dict[str, str] | None = None) -> requests.Response:
        return self.server._get(path, headers=headers)

    def _bundle(self, body: dict[str, Any]) -> Outcome:
        bundle = FcBundle(body)  # strict: raises on anything that is not R4
        return summary([bundle.as_json()])

    def _run(self, op: Op) -> Outcome:
        s = self.server
        if op.kind == "capabilities":
            return summary([s.capabilityStatement.as_json()])
        if op.kind == "read" and op.headers:
            res = self._json(f"{op.type}/{op.id}", headers=op.headers)
            return {"status": res.status_code} if res.status_code == 304 else _resource(res.json())
        if op.kind == "read":
            cls = type(FHIRElementFactory.instantiate(op.type, None))
            return _resource(cls.read(op.id, s).as_json())
        if op.kind == "vread":
            return _resource(
                self._model(s.request_json(f"{op.type}/{op.id}/_history/{op.version}")).as_json()
            )
        if op.kind == "search":
            if op.post:
                res = s.session.post(f"{self.base}/{op.type}/_search", data=list(op.params), timeout=120)
                s.raise_for_status(res)
                return summary([b.as_json() for b in _pages_of(lambda: FcBundle(res.json()), s, True)])
            query = urlencode(list(op.params))
            pages = [
                b.as_json() for b in _pages_of(lambda: FcBundle.read_from(f"{op.type}?{query}", s), s, True)
            ]
            if dict(op.params).get("_count") == "0":
                return {"status": 200, "total": pages[0].get("total")}
            return summary(pages)
        if op.kind == "history-instance":
            return self._bundle(s.request_json(f"{op.type}/{op.id}/_history"))
        if op.kind == "history-type":
            return self._bundle(s.request_json(f"{op.type}/_history"))
        if op.kind in ("batch", "transaction"):
            return self._bundle(s.post_json("", op.body).json())
        if op.kind == "operation":
            return summary(
                [
                    b.as_json()
                    for b in _pages_of(lambda: FcBundle.read_from(f"{op.type}/{op.id}/{op.name}", s), s, True)
                ]
            )
        if op.kind == "kickoff":
            path = "/".join(p for p in (op.type, op.id, "$export") if p)
            res = self._json(path, headers=KICKOFF)
            _cancel(res, None, s.session.headers.get("Authorization", " ").split(" ")[1] or None)
            return {"status": res.status_code}
        raise AssertionError(op.kind)


def _pages_of(first: Callable[[], Any], server: FHIRServer, follow: bool) -> list[Any]:
    from fhirclient._utils import iter_pages

    bundle = first()
    return list(iter_pages(bundle, server)) if follow else [bundle]


class FhirKitAdapter:
    """fhir-kit-client (Node): tests/clients/js/run.mjs reads the operations on stdin."""

    name = "fhir-kit-client"

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base
        self.token = token

    def run(self, ops: Iterable[Op]) -> list[Outcome]:
        listed = list(ops)
        payload = json.dumps(
            {"baseUrl": self.base, "token": self.token, "ops": [o.as_json() for o in listed]}
        )
        done = subprocess.run(
            ["node", str(JS / "run.mjs")],
            input=payload,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outcomes: list[Outcome] = json.loads(done.stdout)
        for outcome in outcomes:
            location = outcome.pop("contentLocation", None)
            if location:
                _cancel(None, location, self.token)
        return outcomes


ADAPTERS = (FhirpyAdapter, FhirclientAdapter, FhirKitAdapter)
