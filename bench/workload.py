"""The benchmark workload: the example cases multiplied under fresh case ids (same content, new keys)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("ivclms-0*.json"))


def cases(count: int, *, prefix: str = "BENCH") -> Iterator[dict[str, Any]]:
    """``count`` cases cycling through the examples; case ``i`` is ``<prefix>-<i>`` of its source system."""
    originals = [json.loads(p.read_text()) for p in EXAMPLES]
    for i in range(count):
        case = json.loads(json.dumps(originals[i % len(originals)]))
        case["case_id"] = f"{prefix}-{i:07d}"
        case["patient"]["identifier"]["value"] = f"{prefix}-MRN-{i:07d}"
        yield case
