"""Kaplan-Meier curves as server-rendered SVG, drawn from the numbers of the registry summary.

Nothing is estimated here: the step function, its 95% confidence band and the censoring marks are the
rows of ``service.registry.summary.kaplan_meier`` (lifelines); the numbers at risk under the axis are
read off the same rows (ticks yearly, or every 2, 5, 10 ... years: at most MAX_TICKS steps; at a
tick t: the ``at_risk`` of the first row at or after t, i.e. those still followed at t; 0 past the
last row). Survival is shown in percent. Every text is escaped.
The landmarks' wording (percentages, nothing like "1 (95% CI 1-1)" before any event) is the
summary's own (``service.registry.summary.landmark_text``), shared with ``/registry/summary``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP = 64, 24, 24
PLOT_H = 220
TICK_MONTHS = 12
"""Ticks every year, the time unit of the summary being months, while that gives few enough."""
MAX_TICKS = 12
"""At most this many steps on the axis whatever the longest time (one case followed 12,000,000
months must not draw a million ticks): the step grows by 1, 2, 5 x 10^k years."""


def at_risk(rows: Sequence[Mapping[str, Any]], n: int, month: float) -> int:
    """How many are still followed at ``month``: the at-risk count of the first row at or after it."""
    for row in rows:
        if row["time_months"] >= month:
            return int(row["at_risk"])
    return 0 if rows else n


def step(longest: float) -> int:
    """The tick step in months: a year, else the smallest "nice" multiple of a year (2, 5, 10, 20,
    50 ... years) that covers ``longest`` in at most MAX_TICKS steps."""
    if not math.isfinite(longest):
        longest = 0.0
    scale = 1
    while True:
        for factor in (1, 2, 5):
            months = TICK_MONTHS * factor * scale
            if longest <= months * MAX_TICKS:
                return months
        scale *= 10


def ticks(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Ticks from 0 to past the longest time: yearly, or a nice multiple of a year, at most MAX_TICKS
    steps (so MAX_TICKS + 1 marks) whatever the range."""
    longest = max((float(r["time_months"]) for r in rows), default=0.0)
    every = step(longest)
    last = max(every, math.ceil(longest / every) * every)
    return list(range(0, last + 1, every))


def render(km: Mapping[str, Any], title: str) -> str:
    """One curve as a standalone SVG document (``role=img`` with a title for screen readers)."""
    rows: list[Mapping[str, Any]] = list(km["table"])
    marks = ticks(rows)
    span = float(marks[-1])
    plot_w = WIDTH - LEFT - RIGHT

    def x(month: float) -> float:
        return round(LEFT + plot_w * month / span, 1)

    def y(fraction: float) -> float:
        return round(TOP + PLOT_H * (1 - fraction), 1)

    line, upper, lower = [(0.0, 1.0)], [(0.0, 1.0)], [(0.0, 1.0)]
    censors: list[tuple[float, float]] = []
    survival, high, low = 1.0, 1.0, 1.0
    for row in rows:
        t = float(row["time_months"])
        if row["events"]:
            line += [(t, survival), (t, float(row["survival"]))]
            upper += [(t, high), (t, float(row["ci_upper"]))]
            lower += [(t, low), (t, float(row["ci_lower"]))]
            survival, high, low = float(row["survival"]), float(row["ci_upper"]), float(row["ci_lower"])
        if row["censored"]:
            censors.append((t, survival))
    end = float(rows[-1]["time_months"]) if rows else 0.0
    line.append((end, survival))
    upper.append((end, high))
    lower.append((end, low))

    def points(pairs: Sequence[tuple[float, float]]) -> str:
        return " ".join(f"{x(t)},{y(s)}" for t, s in pairs)

    escaped = html.escape(title)
    median = km.get("median_months")
    # no case in the curve: no median at all ("-"), not "not reached" (review 15, M3)
    summary = f"n = {km['n']}, events = {km['events']}, median " + (
        "-"
        if not km["n"]
        else "not reached"
        if median is None or median == math.inf
        else f"{median:g} months"
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" aria-labelledby="km-title" class="km" font-family="sans-serif" '
        'font-size="12">',
        f'<title id="km-title">{escaped} (Kaplan-Meier, 95% CI); {html.escape(summary)}</title>',
        f'<text x="{LEFT}" y="14" font-weight="bold">{escaped}</text>',
    ]
    for pct in (0, 25, 50, 75, 100):
        py = y(pct / 100)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py}" y2="{py}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{py + 4}" text-anchor="end">{pct}%</text>')
    if rows:
        band = points(upper) + " " + points(list(reversed(lower)))
        parts.append(
            f'<polygon class="ci" points="{band}" fill="#9ecae1" fill-opacity="0.45" stroke="none"/>'
        )
        parts.append(
            f'<polyline class="curve" points="{points(line)}" fill="none" stroke="#08519c" stroke-width="2"/>'
        )
        for t, s in censors:
            parts.append(
                f'<path class="censor" d="M{x(t)},{y(s) - 5}v10M{x(t) - 4},{y(s)}h8" stroke="#08519c" '
                'stroke-width="1.5"/>'
            )
    axis_y = TOP + PLOT_H
    parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{axis_y}" y2="{axis_y}" stroke="#333"/>')
    parts.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{axis_y}" stroke="#333"/>')
    risk_y = axis_y + 52
    parts.append(f'<text x="4" y="{risk_y}" class="risk-label">At risk</text>')
    for month in marks:
        px = x(month)
        parts.append(f'<line x1="{px}" x2="{px}" y1="{axis_y}" y2="{axis_y + 5}" stroke="#333"/>')
        parts.append(f'<text x="{px}" y="{axis_y + 18}" text-anchor="middle">{month}</text>')
        parts.append(
            f'<text x="{px}" y="{risk_y}" text-anchor="middle" class="at-risk">'
            f"{at_risk(rows, int(km['n']), month)}</text>"
        )
    parts.append(f'<text x="{LEFT + plot_w / 2}" y="{axis_y + 34}" text-anchor="middle">Months</text>')
    parts.append(
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 8}" text-anchor="end">{html.escape(summary)}</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)
