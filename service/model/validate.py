"""``validate_case``: schema, derived values and rules in one call; problems as Issues with paths."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from marshmallow import ValidationError

from service.errors import Issue, Unprocessable
from service.model import rules
from service.model.fields import REQUIRED
from service.model.schema import CaseSchema

_SCHEMA = CaseSchema()
ROOT = "case"


def validate_case(data: Any) -> dict[str, Any]:
    """The canonical case for ``data``; raises Unprocessable with one Issue per problem."""
    if not isinstance(data, Mapping):
        raise Unprocessable([Issue("invalid", f"{ROOT}: must be an object", ROOT)])
    try:
        case: dict[str, Any] = _SCHEMA.load(data)
    except ValidationError as error:
        raise Unprocessable(issues_from_messages(error.messages)) from None
    issues = rules.derive(case)
    issues += rules.check(case)
    if issues:
        raise Unprocessable(issues)
    return case


def issues_from_messages(messages: Any) -> list[Issue]:
    """Marshmallow's nested error dict as Issues with paths like ``surgery[0].ivc_management.method``."""
    out = []
    for path, message in _walk(messages, ""):
        where = path or ROOT
        code = "required" if message == REQUIRED else "invalid"
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
