"""Units of the measured case fields: each dimension, its units and their factor to a common base.

A measured field is stored in one canonical unit (named in the field name, e.g. ``_cm``, ``_min``);
input in another unit of the same dimension is converted, never rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Days per month and per year: the conventions of the data set (months = days / 30.4375).
DAYS_PER_MONTH = 30.4375
MAX_AGE_YEARS = 130
"""The oldest age at diagnosis the case model takes, given or derived from the birth date."""
DAYS_PER_YEAR = 365.25
# Converted values are rounded to this many decimals so that they are stable.
DECIMALS = 4


@dataclass(frozen=True)
class Dimension:
    name: str
    factors: dict[str, float]  # unit -> amount of the base unit in one of it

    @property
    def units(self) -> list[str]:
        return list(self.factors)


LENGTH = Dimension("length", {"mm": 1.0, "cm": 10.0})
TIME = Dimension("time", {"min": 1.0, "h": 60.0})
VOLUME = Dimension("volume", {"mL": 1.0, "L": 1000.0})
DOSE = Dimension("dose", {"Gy": 1.0, "cGy": 0.01})
MASS = Dimension("mass", {"kg": 1.0, "g": 0.001})
DURATION = Dimension(
    "duration",
    {"days": 1.0, "weeks": 7.0, "months": DAYS_PER_MONTH, "years": DAYS_PER_YEAR},
)

MAX_YEARS = 130
"""The longest duration of the model: the model's own age maximum (patient.age_at_diagnosis <= 130).
An interval beyond it is a typo or an attack (outside review: 1e6 months overflowed the date arithmetic,
12 000 000 months made the survival chart hundreds of MB)."""


def duration_max(unit: str) -> int:
    """``MAX_YEARS`` in ``unit`` of DURATION, whole (1560 months, 47482 days, 6783 weeks, 130 years)."""
    return math.floor(MAX_YEARS * DAYS_PER_YEAR / DURATION.factors[unit])


def convert(value: float, unit: str, canonical: str, dimension: Dimension) -> float:
    """``value`` in ``unit`` expressed in ``canonical``; ``unit`` must be one of ``dimension``'s units."""
    if unit == canonical:
        return value
    return round(value * dimension.factors[unit] / dimension.factors[canonical], DECIMALS)


# Laboratory results: the canonical unit of each test is the table's ``unit`` (mappings/codes.yaml);
# these are the other units accepted, with the factor that converts them to the canonical unit.
LAB_CONVERSIONS: dict[str, dict[str, float]] = {
    "creatinine": {"umol/L": 1 / 88.42, "µmol/L": 1 / 88.42},
    "hemoglobin": {"g/L": 0.1},
    "calcium": {"mmol/L": 4.008},
}
