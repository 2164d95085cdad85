"""Stored answers to writes that carried an ``Idempotency-Key``, replayed when the client retries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from service.store.tables import idempotency_keys


@dataclass(frozen=True)
class StoredAnswer:
    request_hash: str
    status: int
    headers: dict[str, str]
    body: str


def lookup(conn: Connection, principal: str, key: str) -> StoredAnswer | None:
    row = conn.execute(
        select(idempotency_keys).where(
            idempotency_keys.c.principal == principal, idempotency_keys.c.key == key
        )
    ).first()
    if row is None:
        return None
    return StoredAnswer(row.request_hash, row.status, orjson.loads(row.headers_json), row.body)


def remember(conn: Connection, principal: str, key: str, answer: StoredAnswer, now: datetime) -> None:
    """Keep the first answer for a key; a concurrent duplicate keeps the one already stored."""
    try:
        with conn.begin_nested():
            conn.execute(
                insert(idempotency_keys).values(
                    principal=principal,
                    key=key,
                    request_hash=answer.request_hash,
                    status=answer.status,
                    headers_json=orjson.dumps(answer.headers).decode(),
                    body=answer.body,
                    created_at=now,
                )
            )
    except IntegrityError:
        pass
