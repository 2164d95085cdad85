"""The validator as intake's gate: a Bundle with profile errors is refused before anything is stored."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from service.errors import Issue, Unprocessable
from service.validation.validator import Validator

BLOCKING = frozenset({"error", "fatal"})


def errors(issues: list[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity in BLOCKING]


@cache
def shared_validator(profiles_dir: Path, base_dir: Path) -> Validator:
    """One validator per process and set of definitions (loading takes a noticeable fraction of a second)."""
    return Validator.load(profiles_dir, base_dir)


def bundle_check(validator: Validator) -> Callable[[dict[str, Any]], None]:
    def check(bundle: dict[str, Any]) -> None:
        found = errors(validator.validate_bundle(bundle))
        if found:
            raise Unprocessable(found)

    return check
