"""Laboratory results: the unit of each test is the ``unit`` of the lab-test table; a few other
units are converted (service.model.units.LAB_CONVERSIONS)."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from service.codes import table
from service.model.units import DECIMALS, LAB_CONVERSIONS


def has_unit(test: str) -> bool:
    return "unit" in table("lab-test").values[test].extra


def canonical_unit(test: str) -> str:
    return str(table("lab-test").values[test].extra["unit"])


def allowed_units(test: str) -> list[str]:
    return [canonical_unit(test), *LAB_CONVERSIONS.get(test, {})]


def normalise_lab(data: dict[str, Any]) -> dict[str, Any]:
    """The result in the test's canonical unit; an unknown unit raises naming the allowed ones.

    A result may be only its stated interpretation (data set, "Stated normal"): value or interpretation
    is required, and a unit goes with a value and only with one. A test without a canonical unit
    (tumour markers, a panel) takes an interpretation only.
    """
    test, value, unit = data["test"], data["value"], data["unit"]
    if value is None:
        if data.get("interpretation") is None:
            raise ValidationError("value or interpretation is required", "value")
        if unit is not None:
            raise ValidationError("only allowed with value", "unit")
        return data
    if not has_unit(test):
        raise ValidationError(f"{test} takes an interpretation only (it has no single unit)", "value")
    if unit is None:
        raise ValidationError("required with value", "unit")
    canonical = canonical_unit(test)
    if unit == canonical:
        return data
    factor = LAB_CONVERSIONS.get(test, {}).get(unit)
    if factor is None:
        allowed = ", ".join(allowed_units(test))
        raise ValidationError(f"unit {unit!r} is not allowed for {test}; allowed units: {allowed}", "unit")
    return {**data, "value": _scaled(data["value"], factor), "unit": canonical}


def _scaled(value: Any, factor: float) -> Any:
    """A number, bound or range converted: each number it holds times ``factor``."""
    if isinstance(value, dict):
        return {k: v if k == "comparator" else round(v * factor, DECIMALS) for k, v in value.items()}
    return round(value * factor, DECIMALS)
