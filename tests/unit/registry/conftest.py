"""The example cases, canonical (validated), as the registry modules read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.model import validate_case

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE_FILES = sorted(EXAMPLES_DIR.glob("ivclms-0*.json"))


def raw(stem: str) -> dict:
    """An example as written in its file (``ivclms-001`` ...)."""
    path = next(p for p in EXAMPLE_FILES if p.name.startswith(stem))
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def cases() -> list[dict]:
    return [validate_case(json.loads(p.read_text(encoding="utf-8"))) for p in EXAMPLE_FILES]


@pytest.fixture
def case():
    def load(stem: str) -> dict:
        return validate_case(raw(stem))

    return load
