"""An operator settles an open pull conflict (``service.sync.pull``): keep ours, or take the server's.

* ``ours``: the service's content wins. The conflict is resolved and the case's current version is
  queued again (``outbox.requeue``), even when it was delivered already, so the worker overwrites the
  server's change; the next pull treats that server version as decided (the pull's ``settled``) and
  neither merges it nor raises the conflict again.
* ``theirs``: the server's resource is merged into the current case exactly as the pull would have
  merged it had the service not changed the element (the pull's own merge, with the resource accepted),
  stored through ``Intake.update`` with ``If-Match`` (a case changed meanwhile is merged again), recorded
  in ``pulled_resources``, and the conflict resolved. A merged case the mapping or the validation rejects
  is a 422: nothing stored, the conflict stays open. A withdrawn case is not merged into (409), as the
  pull does not merge into one.
* A ``rejected`` entry (the pull's merge already failed the mapping or validation) can only be
  dismissed: ``ours`` resolves it and queues the case to be sent again (when the service has it);
  ``theirs`` is a 409 (the same merge would fail the same way; fix the resource on the server and pull).

An unknown id is 404, one already resolved 409. Logs carry ids and case refs, never content.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, select, update

from service.case_files import CaseFileError
from service.clock import utcnow
from service.db import READ_ONLY
from service.errors import Conflict, Issue, NotFound, PreconditionFailed, Unprocessable
from service.intake import Intake
from service.mapping.spec import MappingError, split_identifier
from service.store import cases as store
from service.store.cases import ACTIVE
from service.store.pull_tables import pull_conflicts
from service.sync import outbox, pull

log = logging.getLogger("ivclms.pull")

OURS = "ours"
THEIRS = "theirs"
CHOICES = (OURS, THEIRS)
AUTHOR = pull.AUTHOR
"""Author of the version that takes the server's side: the content came from the pull."""
_ATTEMPTS = 3


@dataclass(frozen=True)
class Resolution:
    id: int
    keep: str
    case_ref: str | None
    version: int | None
    """The case version that holds the chosen side (None for a case the service does not have)."""
    queued: bool
    """``ours``: a new outbox entry sends the version again (False when one was waiting already)."""
    changed: bool
    """``theirs``: a new case version was stored (False when the case already held the server's)."""


def _open(engine: Engine, conflict_id: int) -> Any:
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        row = conn.execute(select(pull_conflicts).where(pull_conflicts.c.id == conflict_id)).first()
    if row is None:
        raise NotFound(f"no pull conflict {conflict_id}")
    if row.resolved_at is not None:
        raise Conflict(f"pull conflict {conflict_id} is resolved already")
    return row


def conflict_source(engine: Engine, conflict_id: int) -> str:
    """The source system of the case a conflict belongs to (its stored case, else its business
    identifier): resolving it writes that hospital's case. NotFound for an unknown id."""
    with engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
        row = conn.execute(select(pull_conflicts).where(pull_conflicts.c.id == conflict_id)).first()
        case = store.find(conn, row.case_ref) if row is not None and row.case_ref else None
    if row is None:
        raise NotFound(f"no pull conflict {conflict_id}")
    if case is not None:
        return str(case.source_system)
    try:
        return split_identifier(row.identifier or "")[0]
    except MappingError:
        return ""  # no case and no identifier: only a client of every source system may act on it


def resolve(
    engine: Engine,
    intake: Intake,
    conflict_id: int,
    keep: str,
    *,
    author: str = AUTHOR,
    clock: Callable[[], datetime] = utcnow,
) -> Resolution:
    """Settle open conflict ``conflict_id`` with ``keep`` (``ours`` or ``theirs``, see the module doc)."""
    if keep not in CHOICES:
        raise ValueError(keep)  # the API checks the choice; this is a caller's defect
    row = _open(engine, conflict_id)
    if keep == OURS:
        return _keep_ours(engine, row, clock())
    if row.kind == pull.REJECTED:
        raise Conflict(
            f"pull conflict {conflict_id} is a rejected merge: it can only be dismissed (keep ours); "
            "fix the resource on the FHIR server and pull again",
            "keep",
        )
    # Claimed before the merge: a concurrent "keep ours" (or a second "theirs") then finds it resolved
    # (409) instead of both being told their side won (outside review). Reopened when the merge fails.
    with engine.begin() as conn:
        _mark(conn, row.id, clock())
    try:
        return _take_theirs(engine, intake, row, author, clock)
    except BaseException:
        with engine.begin() as conn:
            conn.execute(update(pull_conflicts).where(pull_conflicts.c.id == row.id).values(resolved_at=None))
        raise


def _mark(conn: Any, conflict_id: int, now: datetime) -> None:
    moved = conn.execute(
        update(pull_conflicts)
        .where(pull_conflicts.c.id == conflict_id, pull_conflicts.c.resolved_at.is_(None))
        .values(resolved_at=now)
    )
    if moved.rowcount != 1:
        raise Conflict(f"pull conflict {conflict_id} is resolved already")


def _keep_ours(engine: Engine, row: Any, now: datetime) -> Resolution:
    version: int | None = None
    queued = False
    with engine.begin() as conn:
        _mark(conn, row.id, now)
        case = store.find(conn, row.case_ref) if row.case_ref else None
        if case is not None:
            version = case.version
            queued = outbox.requeue(conn, case.id, case.version, now=now)
    log.info("pull conflict %d: kept the service's side (case %s v%s)", row.id, row.case_ref, version)
    return Resolution(row.id, OURS, row.case_ref, version, queued, changed=False)


def _take_theirs(
    engine: Engine, intake: Intake, row: Any, author: str, clock: Callable[[], datetime]
) -> Resolution:
    resource: dict[str, Any] = orjson.loads(row.resource_json)
    carries = pull.business(resource) is not None
    profiled, plain = ([resource], []) if carries else ([], [resource])
    name = (row.resource_type, row.server_id)
    for _attempt in range(_ATTEMPTS):
        stored = pull.load_case(engine, row.server_url, row.case_ref) if row.case_ref else None
        if stored is None:
            raise NotFound(f"pull conflict {row.id}: its case is not stored")
        if stored.status != ACTIVE:
            raise Conflict(
                f"pull conflict {row.id}: the case is withdrawn; keep ours dismisses the conflict", "keep"
            )
        merge = pull.Merge(stored, row.server_url, accept=frozenset({name}))
        try:
            outcome = pull.merge_and_store(intake, merge, profiled, plain, author)
        except (PreconditionFailed, Conflict):
            continue  # the case changed while it was merged: merge again on the new version
        except (MappingError, CaseFileError) as error:
            raise Unprocessable(
                [
                    Issue(
                        "processing",
                        f"the server's resource does not map into the case ({type(error).__name__})",
                    )
                ]
            ) from None
        if outcome.denied:
            (_found, why), *_ = outcome.denied
            raise Unprocessable([Issue("business-rule", f"the server's resource cannot be merged: {why}")])
        if not any(f.resource is resource for f in outcome.merged) and not merge.known(resource):
            raise Unprocessable(
                [Issue("processing", "the server's resource is not recognised as an element of the case")]
            )
        accepted = outcome.accepted
        version = accepted.version.version if accepted is not None else stored.version
        now = clock()
        with engine.begin() as conn:
            pull.record_merged(conn, row.server_url, stored.ref, version, outcome.merged, now)
            conn.execute(  # settled above when merged now; an already known version settles it here
                update(pull_conflicts)
                .where(pull_conflicts.c.id == row.id, pull_conflicts.c.resolved_at.is_(None))
                .values(resolved_at=now)
            )
        changed = accepted is not None and accepted.changed
        log.info("pull conflict %d: took the server's side (case %s v%d)", row.id, stored.ref, version)
        return Resolution(row.id, THEIRS, stored.ref, version, queued=False, changed=changed)
    raise Conflict(f"pull conflict {row.id}: the case kept changing while it was merged; try again")
