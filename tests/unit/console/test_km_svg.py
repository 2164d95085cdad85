"""Kaplan-Meier SVG: drawn from the summary's own rows (lifelines), never re-estimated."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from service.console import km_svg
from service.registry import summary
from service.registry.summary import kaplan_meier

SVG = "{http://www.w3.org/2000/svg}"
# 6 patients: deaths at 5 and 20 months, censored at 8, 14, 30 and 40
KM = kaplan_meier([5, 8, 14, 20, 30, 40], [1, 0, 0, 1, 0, 0])


def _texts(root, cls):
    return [t.text for t in root.iter(f"{SVG}text") if t.get("class") == cls]


def test_the_curve_is_a_well_formed_svg_with_band_censor_marks_and_numbers_at_risk():
    root = ET.fromstring(km_svg.render(KM, "Overall survival"))
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert root.find(f"{SVG}title").text.startswith("Overall survival")
    assert root.find(f"{SVG}polygon[@class='ci']") is not None
    assert len([p for p in root.iter(f"{SVG}path") if p.get("class") == "censor"]) == 4
    # yearly ticks 0..48; at risk = those still followed at the tick (times >= t): 6, 4 (14,20,30,40), 2, 1, 0
    assert _texts(root, "at-risk") == ["6", "4", "2", "1", "0"]


def test_the_step_falls_only_at_events_to_the_summary_s_survival():
    root = ET.fromstring(km_svg.render(KM, "x"))
    points = root.find(f"{SVG}polyline[@class='curve']").get("points").split()
    ys = sorted({float(p.split(",")[1]) for p in points})
    expected = {1.0} | {r["survival"] for r in KM["table"] if r["events"]}
    assert len(ys) == len(expected)  # one level per estimate: 1, then after each death
    lowest = max(ys)
    assert lowest == pytest.approx(km_svg.TOP + km_svg.PLOT_H * (1 - min(expected)), abs=0.1)


def test_landmarks_in_percent_and_no_interval_before_any_event():
    assert summary.landmark_text(KM, "12").startswith("83.3% (95% CI ")  # 5/6 after the first death
    assert re.fullmatch(r"\d+\.\d% \(95% CI \d+\.\d%-\d+\.\d%\)", summary.landmark_text(KM, "36"))
    assert summary.landmark_text(KM, "60") == "- (past the longest follow-up)"
    late = kaplan_meier([20, 30], [1, 0])  # no event in the first year
    assert late["at_months"]["12"] == {"survival": 1.0, "ci_lower": 1.0, "ci_upper": 1.0}
    assert summary.landmark_text(late, "12") == "100% (no event yet)"
    # the same wording on /registry/summary's own HTML page
    page = summary.render_html(
        {**summary.summarise([]), "kaplan_meier": {"overall_survival": late, "disease_free_survival": KM}}
    )
    assert "100% (no event yet)" in page and not re.search(r"\b1 \(95% CI 1-1\)", page)


def test_an_empty_series_still_draws_axes():
    root = ET.fromstring(km_svg.render(kaplan_meier([], []), "none"))
    assert root.find(f"{SVG}polyline") is None
    assert _texts(root, "at-risk") == ["0", "0"]
    # review 15, M3: no case in the curve has no median, it is not "not reached"
    assert root.find(f"{SVG}title").text == "none (Kaplan-Meier, 95% CI); n = 0, events = 0, median -"


def test_ticks_are_bounded_whatever_the_longest_time():
    """Review 15 (attacker): one case followed 12,000,000 months drew a tick per year (a million ticks,
    383 MB). At most MAX_TICKS "nice" steps (1, 2, 5 x 10^k years), starting at 0, past the longest."""
    huge = kaplan_meier([5, 12_000_000], [1, 0])
    marks = km_svg.ticks(huge["table"])
    assert len(marks) <= km_svg.MAX_TICKS + 1
    assert marks[0] == 0 and marks[-1] >= 12_000_000
    step = marks[1] - marks[0]
    assert marks == list(range(0, marks[-1] + 1, step))
    assert step % km_svg.TICK_MONTHS == 0 and str(step // km_svg.TICK_MONTHS).lstrip("125").strip("0") == ""
    svg = km_svg.render(huge, "Overall survival")
    assert len(svg) < 20_000
    ET.fromstring(svg)


def test_short_series_keep_yearly_ticks_and_long_ones_a_nice_step():
    assert km_svg.ticks(kaplan_meier([40], [0])["table"]) == [0, 12, 24, 36, 48]
    assert km_svg.ticks(kaplan_meier([144], [0])["table"]) == list(range(0, 145, 12))  # 12 steps
    assert km_svg.ticks(kaplan_meier([150], [0])["table"]) == list(range(0, 168 + 1, 24))  # 2 years
