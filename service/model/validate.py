"""``validate_case``: schema, derived values and rules in one call; problems as Issues with paths."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator, Mapping
from typing import Any

from marshmallow import Schema, ValidationError, fields

from service.clock import utcnow
from service.errors import Issue, Unprocessable
from service.model import dates, rules
from service.model import fields as f
from service.model.schema import CaseSchema

_SCHEMA = CaseSchema()
ROOT = "case"


def validate_case(data: Any, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The canonical case for ``data``; raises Unprocessable with one Issue per problem. ``now`` (the
    clock, default the service's) decides which dates are "after today"."""
    if not isinstance(data, Mapping):
        raise Unprocessable([Issue("invalid", f"{ROOT}: must be an object", ROOT)])
    try:
        case: dict[str, Any] = _SCHEMA.load(data)
    except ValidationError as error:
        raise Unprocessable(issues_from_messages(error.messages)) from None
    issues = rules.derive(case)
    issues += rules.check(case)
    today = dates.latest_today(now or utcnow())
    issues += rules.not_after_today(dated_paths(_SCHEMA, case, ""), today)
    issues += rules.intervals_not_after_today(case, today)
    if issues:
        raise Unprocessable(issues)
    return case


def issues_from_messages(messages: Any) -> list[Issue]:
    """Marshmallow's nested error dict as Issues with paths like ``surgery[0].ivc_management.method``."""
    out = []
    for path, message in _walk(messages, ""):
        where = path or ROOT
        code = "required" if message == f.REQUIRED else "invalid"
        out.append(Issue(code=code, diagnostics=f"{where}: {message}", expression=where))
    return out


def _walk(messages: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(messages, str):
        yield path, messages
    elif isinstance(messages, list):
        for item in messages:
            yield from _walk(item, path)
    elif isinstance(messages, Mapping):
        for key, value in messages.items():
            if key == "_schema":
                child = path
            elif isinstance(key, int):
                child = f"{path}[{key}]"
            else:
                child = f"{path}.{key}" if path else str(key)
            yield from _walk(value, child)


def dated_paths(schema: Schema, data: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
    """(path, value) of every date recorded in a loaded case, found through the schema's Date fields."""
    return _dated(_date_plan(schema), data, prefix)


_DATE, _ONE, _MANY = 0, 1, 2
DatePlan = tuple[tuple[str, int, Any], ...]


@functools.cache
def _date_plan(schema: Schema) -> DatePlan:
    """The fields of ``schema`` that are or hold dates, in field order: the schema is the same for every
    case, so which of its fields to look into is worked out once per schema, not per case and field."""
    plan: list[tuple[str, int, Any]] = []
    for name, field in schema.fields.items():
        if isinstance(field, f.Date):
            plan.append((name, _DATE, None))
        elif isinstance(field, fields.Nested):
            plan.append((name, _ONE, _date_plan(_nested(field))))
        elif isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
            plan.append((name, _MANY, _date_plan(_nested(field.inner))))
    return tuple(plan)


def _dated(plan: DatePlan, data: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
    for name, kind, inner in plan:
        value = data.get(name)
        if value is None:
            continue
        path = f"{prefix}{name}"
        if kind == _DATE:
            if value != dates.UNKNOWN:  # no date, so nothing that can be after today
                yield path, value
        elif kind == _ONE:
            if isinstance(value, Mapping):
                yield from _dated(inner, value, f"{path}.")
        else:
            for i, entry in enumerate(value):
                yield from _dated(inner, entry, f"{path}[{i}].")


def _nested(field: fields.Nested) -> Schema:
    schema = field.schema
    assert isinstance(schema, Schema)
    return schema
