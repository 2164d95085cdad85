"""What the console's sync page shows of a pull conflict: the service's entry and the server's resource
side by side, field by field (Flask-free)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from service.console.diff import Change, side_by_side
from service.sync import pull
from service.sync.status import PullConflict


@dataclass(frozen=True)
class ConflictView:
    conflict: PullConflict
    case_version: int | None
    """The case's current version (None when the service does not have the case)."""
    has_ours: bool
    """Whether the current version holds an entry with the conflict's business identifier."""
    rows: list[Change]
    """``before`` the service's value, ``after`` the server's; ``kind`` ``same`` where they agree."""

    @property
    def differences(self) -> int:
        return sum(r.kind != "same" for r in self.rows)


def conflict_views(engine: Engine, conflicts: list[PullConflict]) -> list[ConflictView]:
    """Each open conflict against the current version of its case. The server's resource is shown as
    the merge would hold it (server bookkeeping left out, references into the case's Bundle), so only
    real differences are marked."""
    loaded: dict[tuple[str, str], Any] = {}
    views = []
    for c in conflicts:
        stored = None
        if c.case_ref is not None:
            key = (c.server_url, c.case_ref)
            if key not in loaded:
                loaded[key] = pull.load_case(engine, c.server_url, c.case_ref)
            stored = loaded[key]
        if stored is None:
            ours: dict[str, Any] = {}
            theirs = pull.strip_server_meta(c.resource)
        else:
            entry = stored.entries.get(c.identifier) if c.identifier else None
            ours = {k: v for k, v in (entry or {}).get("resource", {}).items() if k != "id"}
            theirs = pull.Merge(stored, c.server_url).as_merged(c.resource)
        views.append(
            ConflictView(
                conflict=c,
                case_version=stored.version if stored is not None else None,
                has_ours=bool(ours),
                rows=side_by_side(ours, theirs),
            )
        )
    return views
