"""Hypothesis strategies for hostile input: arbitrary JSON, mutated documents, mutated CSV."""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

NASTY_TEXT = (
    "",
    " ",
    "x" * 300,
    "../../etc/passwd",
    "'; DROP TABLE cases;--",
    "\u0000",
    "\ufeff",
    "\ud7ff\U0001f600",
    "urn:x|y|z",
    "2026-02-30",
    "9999-99-99",
    "NaN",
    '"quoted", comma\nnewline',
)
NASTY_NUMBERS = (-1, 0, -0.0, 1e308, -1e308, 2**63, 2**64, 5e-324, 1.5)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(NASTY_TEXT)
    | st.sampled_from(NASTY_NUMBERS)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key or index) of every value inside ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _slots(value)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield node, index
            yield from _slots(value)


@st.composite
def mutated(draw: st.DrawFn, documents: list[dict[str, Any]]) -> dict[str, Any]:
    """One of ``documents`` with one to four edits: a value replaced (same type or any JSON), a key or
    item removed, an unknown key added, a list item duplicated."""
    doc = copy.deepcopy(draw(st.sampled_from(documents)))
    for _ in range(draw(st.integers(1, 4))):
        slots = list(_slots(doc))
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        edit = draw(st.sampled_from(("replace", "retype", "remove", "add", "duplicate")))
        old = container[key]
        if edit == "replace":
            container[key] = draw(json_values)
        elif edit == "retype":
            if isinstance(old, str):
                container[key] = draw(st.sampled_from(NASTY_TEXT) | st.text(max_size=20))
            elif isinstance(old, int | float) and not isinstance(old, bool):
                container[key] = draw(st.sampled_from(NASTY_NUMBERS))
            else:
                container[key] = draw(scalars)
        elif edit == "remove":
            del container[key]
        elif edit == "add" and isinstance(old, dict):
            old[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        elif edit == "duplicate" and isinstance(container, list):
            container.append(copy.deepcopy(old))
    return doc


@st.composite
def mutated_csv(draw: st.DrawFn, header: list[str], rows: list[list[str]]) -> str:
    """A CSV case series with cells replaced, columns dropped or added, rows cut or repeated."""
    head = list(header)
    body = [list(r) for r in draw(st.lists(st.sampled_from(rows), min_size=0, max_size=2))]
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(("cell", "cell", "drop-column", "add-column", "cut-row", "repeat")))
        if edit == "cell" and body and body[0]:
            row = body[0]
            i = draw(st.integers(0, len(row) - 1))
            row[i] = draw(st.sampled_from(NASTY_TEXT) | st.text(max_size=30))
        elif edit == "drop-column" and len(head) > 1:
            i = draw(st.integers(0, len(head) - 1))
            del head[i]
            for row in body:
                del row[i : i + 1]
        elif edit == "add-column":
            head.append(draw(st.text(min_size=1, max_size=12)))
            for row in body:
                row.append(draw(st.text(max_size=8)))
        elif edit == "cut-row" and body:
            row = draw(st.sampled_from(body))
            del row[draw(st.integers(0, len(row))) :]
        elif edit == "repeat" and body:
            body.append(list(body[0]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(("\n", "\r\n"))))
    writer.writerow(head)
    writer.writerows(body)
    return out.getvalue()
