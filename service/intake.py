"""Intake: a case (or many) validated, mapped, stored as a new version and queued for sync, atomically.

Everything that can reject a request (schema, rules, mapping) runs before the database is touched,
so a rejected request stores and queues nothing. A batch (CSV import, an EHR's Bundle) is one
transaction: all its cases or none.

Idempotency comes from the business key (source system + case id): posting a case whose canonical
content equals the current version returns that version; posting different content for an existing
key is a conflict for ``POST /cases`` (use ``PUT`` with ``If-Match``) and a new version for batches,
which is how EHRs and spreadsheets resend corrected cases.

Authorization of a write is decided here, under the case's row lock, from what the write really does
(create, new version, withdrawal, nothing): the caller passes ``authorize``, which sees a ``CaseWrite``
and raises Forbidden (or NotFound) before anything is written. A pre-read outside the transaction
would race with a concurrent writer (a "create" that lands on a case created a moment before).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import orjson
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from service.clock import instant, utcnow
from service.db import READ_ONLY
from service.errors import Conflict, Forbidden, Issue, NotFound, PreconditionFailed, Unprocessable
from service.limits import Limits, check_case, check_resources
from service.mapping.forward import case_to_bundle
from service.mapping.retract import retract
from service.mapping.spec import MappingError
from service.model import validate_case
from service.store import cases as store
from service.store import resources as index
from service.store.cases import ACTIVE, ENTERED_IN_ERROR, CaseRow, VersionRow

BundleCheck = Callable[[dict[str, Any]], None]
"""Raises Unprocessable when a mapped Bundle breaks a profile (the local validator, when configured)."""


class Change(Enum):
    """What a write does to one case, as decided under its row lock."""

    CREATE = "c"
    """A case that did not exist."""
    UPDATE = "u"
    """A new version of an existing case, including reviving a withdrawn (entered-in-error) one."""
    WITHDRAW = "d"
    """Marking an existing case entered-in-error (DELETE)."""
    NONE = "none"
    """Nothing is written: the same content again (answered with the stored case), or a create that
    finds other content (409)."""


@dataclass(frozen=True)
class CaseWrite:
    """One write, for the caller's authorization: the change, the case's source system and every
    resource type it touches (a new version: those of the stored and of the new Bundle)."""

    change: Change
    source_system: str
    types: frozenset[str]
    ref: str
    existing: CaseRow | None


Authorize = Callable[[CaseWrite], None]
"""Raises Forbidden (or NotFound) when the caller may not make this write; None: a trusted caller
(the operator's command line, the pull from the hospital's FHIR server)."""


def bundle_types(bundle: dict[str, Any]) -> frozenset[str]:
    """The resource types of a Bundle's entries."""
    return frozenset(str(e["resource"]["resourceType"]) for e in bundle.get("entry", []) if "resource" in e)


_ATTEMPTS = 5
"""Optimistic retries when a concurrent writer got there first (same key inserted, version moved)."""


class OnChange(Enum):
    CONFLICT = "conflict"
    NEW_VERSION = "new-version"


@dataclass(frozen=True)
class Prepared:
    """A case that passed every check, with the Bundle it maps to; nothing stored yet."""

    case: dict[str, Any]
    bundle: dict[str, Any]
    content_hash: str

    @property
    def ref(self) -> str:
        return store.case_ref(self.case["source_system"], self.case["case_id"])


@dataclass(frozen=True)
class Accepted:
    case: CaseRow
    version: VersionRow
    created: bool
    """A case that did not exist before (201)."""
    changed: bool
    """A new version was stored (and queued)."""
    resources: dict[str, index.Written] = field(default_factory=dict)
    """Per resource id of the case's Bundle: its own version on the read side after this write
    (what a FHIR answer's ``location`` and ``etag`` name), and whether this write created it."""


def content_hash(case: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(case, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Intake:
    def __init__(
        self,
        engine: Engine,
        *,
        enqueue: bool,
        clock: Callable[[], datetime] = utcnow,
        check_bundle: BundleCheck | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.engine = engine
        self.limits = limits or Limits()
        self.enqueue = enqueue
        self.clock = clock
        self.check_bundle = check_bundle

    # -- checks (no database) ---------------------------------------------------------------------

    def prepare(self, data: Any, *, now: datetime | None = None) -> Prepared:
        """Validate and map; raises Unprocessable naming every problem (TooLarge before any of it for a
        case over the cost limit)."""
        check_case(data, self.limits)
        case = validate_case(data)
        return self.prepare_valid(case, now=now)

    def prepare_valid(self, case: dict[str, Any], *, now: datetime | None = None) -> Prepared:
        try:
            bundle = case_to_bundle(case, now=instant(now or self.clock()))
        except MappingError as error:
            raise Unprocessable([Issue("processing", str(error))]) from None
        return self.prepared(case, bundle)

    def prepared(self, case: dict[str, Any], bundle: dict[str, Any]) -> Prepared:
        """A canonical case and the Bundle already mapped from it, checked against the profiles."""
        check_resources(len(bundle.get("entry", [])), self.limits)
        if self.check_bundle is not None:
            self.check_bundle(bundle)
        return Prepared(case, bundle, content_hash(case))

    # -- writes -----------------------------------------------------------------------------------

    def submit(
        self,
        prepared: Prepared,
        author: str,
        *,
        on_change: OnChange = OnChange.CONFLICT,
        authorize: Authorize | None = None,
    ) -> Accepted:
        return self.submit_many([prepared], author, on_change=on_change, authorize=authorize)[0]

    def submit_many(
        self,
        batch: Sequence[Prepared],
        author: str,
        *,
        on_change: OnChange = OnChange.NEW_VERSION,
        authorize: Authorize | None = None,
    ) -> list[Accepted]:
        """All cases of ``batch`` in one transaction; a conflict or a refusal in one rejects them all."""
        results = self._submit(batch, author, on_change, authorize, each=False)
        return [r for r in results if isinstance(r, Accepted)]

    def submit_each(
        self, batch: Sequence[Prepared], author: str, *, authorize: Authorize | None = None
    ) -> list[Accepted | Forbidden]:
        """Like ``submit_many`` (new versions, one transaction), but a case the caller may not write
        is answered with its refusal and stores nothing, while the others are stored (a FHIR batch).
        Safe in one transaction because ``authorize`` runs before anything of that case is written."""
        return self._submit(batch, author, OnChange.NEW_VERSION, authorize, each=True)

    def _submit(
        self,
        batch: Sequence[Prepared],
        author: str,
        on_change: OnChange,
        authorize: Authorize | None,
        *,
        each: bool,
    ) -> list[Accepted | Forbidden]:
        refs = [p.ref for p in batch]
        if len(set(refs)) != len(refs):
            raise Unprocessable([Issue("duplicate", "the same case (source_system + case_id) appears twice")])
        for attempt in range(_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    results: list[Accepted | Forbidden] = []
                    for p in batch:
                        try:
                            results.append(self._upsert(conn, p, author, on_change, None, authorize))
                        except Forbidden as refused:
                            if not each:
                                raise
                            results.append(refused)
                    return results
            except (IntegrityError, _Moved):
                # A concurrent writer stored the same key first: read again, which finds it.
                if attempt == _ATTEMPTS - 1:
                    raise Conflict("the case kept changing while it was stored; retry") from None
        raise AssertionError("unreachable")

    def update(
        self,
        ref: str,
        prepared: Prepared,
        author: str,
        if_match: int | None,
        *,
        authorize: Authorize | None = None,
    ) -> Accepted:
        """A new version of an existing case; ``if_match`` (the ETag's version) guards lost updates."""
        for attempt in range(_ATTEMPTS):
            try:
                if prepared.ref != ref:  # before the lookup: the answer must not tell whether ref exists
                    message = "case_id: source_system and case_id must be those of the case being updated"
                    raise Unprocessable([Issue("invariant", message, "case_id")])
                with self.engine.begin() as conn:
                    current = store.find(conn, ref)
                    if current is None:
                        raise NotFound(f"no case {ref}")
                    return self._upsert(conn, prepared, author, OnChange.NEW_VERSION, if_match, authorize)
            except _Moved:
                if attempt == _ATTEMPTS - 1:
                    raise Conflict("the case kept changing while this update was applied; retry") from None
        raise AssertionError("unreachable")

    def _upsert(
        self,
        conn: Connection,
        p: Prepared,
        author: str,
        on_change: OnChange,
        if_match: int | None,
        authorize: Authorize | None,
    ) -> Accepted:
        now = self.clock()
        current = store.find(conn, p.ref, lock=True)
        source = str(p.case["source_system"])

        def check(change: Change, types: frozenset[str]) -> None:
            if authorize is not None:
                authorize(CaseWrite(change, source, types, p.ref, current))

        new_types = bundle_types(p.bundle)
        if current is None:
            check(Change.CREATE, new_types)
            row = CaseRow(p.ref, p.case["source_system"], p.case["case_id"], 1, ACTIVE, now, now)
            first = self._version(p, 1, author, now)
            store.insert_case(conn, row, first)
            written = index.write(conn, p.ref, p.bundle, now)
            self._queue(conn, p.ref, 1, now)
            return Accepted(row, first, created=True, changed=True, resources=written)
        if if_match is not None and if_match != current.version:
            raise PreconditionFailed(
                f'If-Match: version {if_match} is not current (ETag W/"{current.version}")'
            )
        stored = store.find_version(conn, current.id, current.version)
        assert stored is not None
        if stored.content_hash == p.content_hash and stored.status == ACTIVE:
            check(Change.NONE, new_types)
            now_as_is = index.current(conn, p.ref)
            return Accepted(current, stored, created=False, changed=False, resources=now_as_is)
        if on_change is OnChange.CONFLICT:
            check(Change.NONE, new_types)
            raise Conflict(
                f"case {p.case['case_id']} of {p.case['source_system']} exists with other content: "
                f'update it with PUT /cases/{current.id} (If-Match: W/"{current.version}")',
                "case_id",
            )
        # A new version (or a withdrawn case revived): an update of every type before and after.
        check(Change.UPDATE, new_types | bundle_types(orjson.loads(stored.bundle_json)))
        new = self._version(p, current.version + 1, author, now)
        if not store.add_version(conn, current, new):
            raise _Moved
        written = index.write(conn, p.ref, p.bundle, now)
        self._queue(conn, p.ref, new.version, now)
        updated = CaseRow(**{**current.__dict__, "version": new.version, "status": ACTIVE, "updated_at": now})
        return Accepted(updated, new, created=False, changed=True, resources=written)

    def retract(
        self, ref: str, author: str, if_match: int | None, *, authorize: Authorize | None = None
    ) -> Accepted:
        """Withdraw a case as entered-in-error: a new version whose Bundle marks every resource so."""
        with self.engine.begin() as conn:
            current = store.find(conn, ref, lock=True)
            if current is None:
                raise NotFound(f"no case {ref}")
            last = store.find_version(conn, ref, current.version)
            assert last is not None
            if authorize is not None:
                types = bundle_types(orjson.loads(last.bundle_json))
                authorize(CaseWrite(Change.WITHDRAW, current.source_system, types, ref, current))
            if if_match is not None and if_match != current.version:
                raise PreconditionFailed(
                    f'If-Match: version {if_match} is not current (ETag W/"{current.version}")'
                )
            if last.status == ENTERED_IN_ERROR:
                return Accepted(current, last, created=False, changed=False)
            now = self.clock()
            bundle = retract(orjson.loads(last.bundle_json), now=instant(now))
            new = VersionRow(
                **{
                    **last.__dict__,
                    "version": current.version + 1,
                    "status": ENTERED_IN_ERROR,
                    "bundle_json": orjson.dumps(bundle).decode(),
                    "author": author,
                    "recorded_at": now,
                }
            )
            if not store.add_version(conn, current, new):
                raise Conflict("the case changed while it was withdrawn; retry")
            index.write(conn, ref, bundle, now)
            self._queue(conn, ref, new.version, now)
            updated = CaseRow(
                **{**current.__dict__, "version": new.version, "status": ENTERED_IN_ERROR, "updated_at": now}
            )
            return Accepted(updated, new, created=False, changed=True)

    @staticmethod
    def _version(p: Prepared, number: int, author: str, now: datetime) -> VersionRow:
        return VersionRow(
            case_ref=p.ref,
            version=number,
            status=ACTIVE,
            content_hash=p.content_hash,
            case_json=orjson.dumps(p.case).decode(),
            bundle_json=orjson.dumps(p.bundle).decode(),
            author=author,
            recorded_at=now,
        )

    def _queue(self, conn: Connection, ref: str, version: int, now: datetime) -> None:
        if self.enqueue:
            store.enqueue(conn, ref, version, now)

    # -- reads ------------------------------------------------------------------------------------

    def get(self, ref: str, version: int | None = None) -> tuple[CaseRow, VersionRow]:
        with self.engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            row = store.find(conn, ref)
            if row is None:
                raise NotFound(f"no case {ref}")
            found = store.find_version(conn, ref, version or row.version)
            if found is None:
                raise NotFound(f"case {ref} has no version {version}")
            return row, found

    def case_of(self, resource_type: str, resource_id: str) -> str | None:
        """The case a resource of the read side belongs to (None: no such resource)."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            return index.case_of(conn, resource_type, resource_id)

    def history(self, ref: str) -> list[VersionRow]:
        with self.engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            if store.find(conn, ref) is None:
                raise NotFound(f"no case {ref}")
            return store.history(conn, ref)

    def page(
        self,
        *,
        limit: int,
        after: tuple[datetime, str] | None = None,
        since: datetime | None = None,
        sync_state: str | None = None,
        sources: frozenset[str] | None = None,
    ) -> tuple[list[CaseRow], dict[str, str]]:
        """A page of cases (of ``sources`` only, None: every source system) and the sync state of
        each (absent when never queued)."""
        with self.engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
            rows = store.page(
                conn, limit=limit, after=after, since=since, sync_state=sync_state, sources=sources
            )
            return rows, store.sync_states(conn, [r.id for r in rows])


class _Moved(Exception):
    """The case's version changed between read and write (optimistic lock lost)."""
