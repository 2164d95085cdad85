"""docs/registry.md is generated from the code: it must be current."""

from __future__ import annotations

from pathlib import Path

from service.model import csv_flat
from service.registry import docs, extract

DOC = Path(__file__).resolve().parents[3] / "docs" / "registry.md"


def test_registry_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == docs.render(), (
        "docs/registry.md is stale: python -m service.registry.docs > docs/registry.md"
    )


def test_the_data_dictionary_covers_every_column():
    text = DOC.read_text(encoding="utf-8")
    patterns = [line.split("`")[1] for line in docs.dictionary()]
    expanded = set()
    for pattern in patterns:
        names = [pattern]
        while any("{1.." in n for n in names):
            out = []
            for n in names:
                if "{1.." not in n:
                    out.append(n)
                    continue
                start = n.index("{1..")
                end = n.index("}", start)
                top = int(n[start + 4 : end])
                out += [n[:start] + str(k) + n[end + 1 :] for k in range(1, top + 1)]
            names = out
        expanded.update(names)
    assert set(extract.columns(extract.Options())) == expanded
    assert set(csv_flat.column_names()) <= expanded
    for pattern in patterns:
        assert f"`{pattern}`" in text
