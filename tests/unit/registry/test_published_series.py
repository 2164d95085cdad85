"""A published case series reproduced to the paper's precision (issue 15).

tests/data/published/ann-vasc-surg-2016-ivc-lms.csv holds what Ann Vasc Surg 2016;33:245-251 says of
each patient (README.md cites it). The paper: "There were 2 males (66.7%) and 1 female (33.3%). Mean
age at diagnosis was 60.3 years (range 43-78)" (an en dash in the paper). The summary's statistics
and its page cells must print exactly that from the per-patient values.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from service.registry import summary

DATA = Path(__file__).resolve().parents[2] / "data" / "published" / "ann-vasc-surg-2016-ivc-lms.csv"


def rows() -> list[dict[str, str]]:
    with DATA.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_mean_age_and_range_as_the_paper_prints_them():
    ages = [int(row["age_at_diagnosis_years"]) for row in rows()]
    stats = summary.describe(ages)
    assert (stats["mean"], stats["min"], stats["max"]) == (60.3, 43, 78)
    assert summary._range(stats, "mean") == "60.3 (43-78); n = 3"


def test_sex_as_the_paper_prints_it():
    sexes = Counter(row["sex"] for row in rows())
    assert summary._pct(sexes["male"], 3) == "2 (66.7%)"
    assert summary._pct(sexes["female"], 3) == "1 (33.3%)"


def test_every_row_quotes_its_sentence():
    for row in rows():
        assert f"{row['age_at_diagnosis_years']}-year-old" in row["paper_sentence"]
        assert ("man" if row["sex"] == "male" else "woman") in row["paper_sentence"]
