"""What changed between two versions of a case: one row per leaf value that differs.

Pure: two canonical case dicts in, rows out. Paths are written as the case schema's error paths are
(``surgery[0].ivc_management.method``) so a row can be read against the data set. A list that grew or
shrank shows the items added or removed; a value is rendered as JSON text (``null`` stays ``null``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MISSING = object()
"""Marks a key or item one side does not have."""


@dataclass(frozen=True)
class Change:
    path: str
    before: str
    after: str
    kind: str
    """``changed``, ``added`` or ``removed`` (``same`` in ``side_by_side``)."""


def _text(value: Any) -> str:
    return "" if value is MISSING else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _walk(path: str, old: Any, new: Any, every: bool = False) -> Iterator[Change]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            yield from _walk(
                f"{path}.{key}" if path else key, old.get(key, MISSING), new.get(key, MISSING), every
            )
        return
    if isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            yield from _walk(
                f"{path}[{i}]",
                old[i] if i < len(old) else MISSING,
                new[i] if i < len(new) else MISSING,
                every,
            )
        return
    if every and (isinstance(old, dict | list) or isinstance(new, dict | list)):
        # one side has a structure the other lacks: each leaf of it against nothing
        if isinstance(old, dict | list):
            yield from _walk(path, old, _empty(old), every)
        elif old is not MISSING:
            yield Change(path or "(resource)", _text(old), "", "removed")
        if isinstance(new, dict | list):
            yield from _walk(path, _empty(new), new, every)
        elif new is not MISSING:
            yield Change(path or "(resource)", "", _text(new), "added")
        return
    if old == new and type(old) is type(new):
        if every:
            yield Change(path or "(resource)", _text(old), _text(new), "same")
        return
    kind = "added" if old is MISSING else "removed" if new is MISSING else "changed"
    yield Change(path or "(case)", _text(old), _text(new), kind)


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """The leaf values that differ between two versions, in the order of the earlier one."""
    return list(_walk("", before, after))


def _empty(like: Any) -> Any:
    return {} if isinstance(like, dict) else []


def side_by_side(left: dict[str, Any], right: dict[str, Any]) -> list[Change]:
    """Every leaf value of two resources, paired by path, with whether it differs (``same`` when not):
    the field-level view of a pull conflict (``before`` is the service's side, ``after`` the server's)."""
    return list(_walk("", left, right, every=True))
