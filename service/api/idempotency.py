"""``Idempotency-Key`` on writes: a retried request gets the first answer again, nothing is done twice.

The answer is stored after the write commits, in its own transaction: a crash between the two makes
the retry run again, which the business key (source system + case id) already makes harmless.

An answer is kept under its caller's owner key *and* the grant that authorized it (scopes, source
systems, roles): a retry by the same owner with the same grant gets the answer, having passed the same
authorization; with any other grant the key finds nothing and the route runs again, its own
authorization first (a narrowed token gets 403, never the stored case).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec

import orjson
from flask import Response, g, request

from service.api.context import ctx
from service.auth import Principal
from service.db import READ_ONLY
from service.errors import BadRequest, Issue, Unprocessable
from service.store import idempotency as store

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEPT_HEADERS = ("Location", "ETag", "Last-Modified", "Content-Type")
P = ParamSpec("P")


def _fingerprint() -> str:
    digest = hashlib.sha256(f"{request.method} {request.full_path}\n".encode())
    digest.update(request.get_data())
    return digest.hexdigest()


def answer_key(principal: Principal) -> str:
    """Whose stored answers these are: the owner (never the bare subject, which a client id could
    mimic) under this exact grant."""
    grant = [
        principal.owner,
        sorted(principal.scopes),
        None if principal.sources is None else sorted(principal.sources),
        sorted(principal.roles),
    ]
    return "grant:" + hashlib.sha256(orjson.dumps(grant)).hexdigest()


def idempotent(view: Callable[P, Response]) -> Callable[P, Response]:
    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= 255 or not key.isprintable():
            raise BadRequest([Issue("invalid", f"{HEADER}: 1 to 255 printable characters", HEADER)])
        principal = answer_key(g.principal)
        fingerprint = _fingerprint()
        engine = ctx().engine
        with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            stored = store.lookup(conn, principal, key)
        if stored is not None:
            if stored.request_hash != fingerprint:
                raise Unprocessable(
                    [Issue("business-rule", f"{HEADER} was already used for a different request", HEADER)]
                )
            return Response(stored.body, status=stored.status, headers={**stored.headers, REPLAYED: "true"})
        response = view(*args, **kwargs)
        if 200 <= response.status_code < 300:
            headers = {h: response.headers[h] for h in KEPT_HEADERS if h in response.headers}
            answer = store.StoredAnswer(
                fingerprint, response.status_code, headers, response.get_data(as_text=True)
            )
            with engine.begin() as conn:
                store.remember(conn, principal, key, answer, ctx().intake.clock())
        return response

    return wrapper
