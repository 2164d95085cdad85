from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.json"))


def load_example(path: Path = ROOT / "examples" / "ivclms-001-segment-ii-graft.json") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.fixture
def example() -> dict[str, Any]:
    return copy.deepcopy(load_example())
