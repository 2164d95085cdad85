"""Field types of the case model.

Every field carries what the JSON Schema, the CSV layout and the documentation need in its
``metadata``: ``description``, and where it applies ``table`` (the code table in mappings/codes.yaml),
``unit`` and ``dimension`` (measured fields). Allowed codes are read from the table at validation time,
never repeated here.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from marshmallow import ValidationError, fields

from service.codes import table
from service.model import dates
from service.model.units import DURATION, Dimension, convert, duration_max

REQUIRED = "required"
NULL = "must not be null"

# Identifier sizes, as the database stores them (service/store/tables.py: cases.case_id String(128),
# cases.source_system and token systems String(512), token values String(1024)).
CASE_ID_MAX = 128
SYSTEM_MAX = 512
VALUE_MAX = 1024

_COMMON_ERRORS = {"required": REQUIRED, "null": NULL}
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
"""Characters below U+0020 but tab, CR and LF: FHIR strings should not hold them, PostgreSQL text cannot
hold NUL."""


# Identifiers (finding 16 of issue 12): the business key (source system + case id) names one patient's
# case, so two spellings that look alike must not make two cases.
_URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")
"""RFC 3986, section 2: the characters a URI is made of (unreserved, reserved and percent-encoded)."""
_INVISIBLE = frozenset(
    {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164, 0xFFA0}
    | {*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)}
)
"""Default-ignorable code points (Unicode DerivedCoreProperties) that are letters or marks, not Cf:
they render as nothing, like the format characters refused by category."""


def case_id_problem(value: str) -> str | None:
    """Why ``value`` (NFC, later NFKC) cannot be a case id, or None. Allowed: letters, combining marks and
    digits of any script, printable ASCII (so ASCII punctuation, symbols and inner spaces). Refused,
    named by code point: format characters (category Cf: zero-width space U+200B, bidi embeddings
    and overrides U+202A-202E and isolates U+2066-2069, ...), control characters, other spaces
    (no-break space, ...), non-ASCII punctuation and symbols (U+2010 HYPHEN, U+2212 MINUS SIGN, ...:
    they look like ASCII ``-``), private-use and unassigned code points, and leading or trailing
    whitespace."""
    if value != value.strip():
        return "must not begin or end with whitespace"
    for char in value:
        point = ord(char)
        if 0x20 <= point < 0x7F:
            continue
        category = unicodedata.category(char)
        if category[0] in "LMN" and point not in _INVISIBLE:
            continue
        name = unicodedata.name(char, "unnamed")
        return (
            f"must not contain U+{point:04X} ({name}, category {category}): a case id holds letters, "
            "marks and digits of any script and printable ASCII only (invisible, bidi, control, "
            "space and non-ASCII punctuation characters look like other ids)"
        )
    return None


def fold_source(value: str) -> str:
    """A source system's comparison and storage form: lower-cased entirely. RFC 3986 (6.2.2.1) makes
    only the scheme and host case-insensitive and RFC 8141 (3.1) the ``urn:`` NID; lower-casing the
    whole URI is the simpler rule documented for this service (a hospital is never told apart by
    letter case), and it matches every source the examples use."""
    return value.lower()


def _options(required: bool, description: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    meta = {"description": description, **(extra or {})}
    if required:
        return {"required": True, "allow_none": False, "metadata": meta, "error_messages": _COMMON_ERRORS}
    return {"load_default": None, "allow_none": True, "metadata": meta, "error_messages": _COMMON_ERRORS}


def _number(value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError("must be a number")
    if not math.isfinite(value):
        raise ValidationError("must be a finite number")
    return value


NUMBER_MAX = 1e9
"""Largest absolute value of any number of the model: far above every real measurement, and finite
enough that nothing downstream (Decimal sums of the registry, date arithmetic, console charts) can
overflow (outside review: 1e27 minutes and 1e300 litres were stored, then the registry answered 500)."""


def _ceiling(number: float) -> float:
    """``number`` when within ``NUMBER_MAX`` in absolute value (the same ceiling after unit conversion)."""
    if not math.isfinite(number):
        raise ValidationError("must be a finite number")
    if abs(number) > NUMBER_MAX:
        raise ValidationError(f"must be at most {NUMBER_MAX:g} in absolute value")
    return number


TEXT_MAX = 10_000
"""Longest free text (institution, notes, other-text fields): a case abstract's sentences fit many
times; a 9 MB institution name (outside review: stored, 36 MB of database) does not."""


T = TypeVar("T")


class Field(fields.Field[T]):
    """A field of the case model. marshmallow's ``_validate`` builds an ``And`` of a field's validators
    for every value loaded; no field here has one (each ``_deserialize`` checks its value itself), so
    with none there is nothing to build or run (four of the ~ten calls per value loaded)."""

    def _validate(self, value: Any) -> None:
        if self.validators:
            super()._validate(value)


class Nested(fields.Nested):
    """``fields.Nested``, without the empty validation of ``Field`` above."""

    def _validate(self, value: Any) -> None:
        if self.validators:
            super()._validate(value)


class List(fields.List[T]):
    """``fields.List``, without the empty validation of ``Field`` above."""

    def _validate(self, value: Any) -> None:
        if self.validators:
            super()._validate(value)


class Text(Field[str]):
    """A non-empty string of at most ``max_length`` characters: ``TEXT_MAX`` for free text, less for
    identifiers (they are stored in bounded columns and quoted into every resource's conditional URL,
    so their size multiplies)."""

    def __init__(self, *, max_length: int | None = TEXT_MAX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_length = max_length

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        if not isinstance(value, str):
            raise ValidationError("must be a string")
        if value == "":
            raise ValidationError("must not be empty (omit the field or use null)")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValidationError(f"must be at most {self.max_length} characters")
        found = _CONTROL.search(value)
        if found:
            raise ValidationError(
                f"must not contain control character U+{ord(found.group()):04X} (tab, CR and LF are allowed)"
            )
        return value


class Uri(Text):
    """An absolute URI (``scheme:rest``), e.g. ``urn:ivclms:example`` or ``https://...``."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not _URI.match(text):
            raise ValidationError("must be an absolute URI (scheme:...)")
        return text


class CaseId(Text):
    """The case identifier: NFC-normalised and checked by ``case_id_problem``, then NFKC-normalised
    (compatibility forms such as fullwidth letters fold to the plain ones) and checked again."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        if isinstance(value, str):
            value = unicodedata.normalize("NFC", value)
        text = super()._deserialize(value, attr, data, **kwargs)
        # Refused as typed (a no-break space or U+2011 is named, not folded to a space or U+2010),
        # then compatibility forms folded: fullwidth letters (U+FF21...) are the plain ones.
        problem = case_id_problem(text) or case_id_problem(text := unicodedata.normalize("NFKC", text))
        if problem:
            raise ValidationError(problem)
        return text


class SourceUri(Uri):
    """The source system: an absolute URI of RFC 3986 characters, stored lower-cased (``fold_source``)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if not _URI_CHARS.match(text):
            raise ValidationError(
                "must be made of URI characters only (RFC 3986: ASCII letters, digits and - . _ ~ : / ? # "
                "[ ] @ ! $ & ' ( ) * + , ; = %; percent-encode others)"
            )
        return fold_source(text)


class Date(Field[str]):
    """A date at the precision recorded: ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` (service.model.dates);
    kept as the ISO string, so the precision survives mapping, storage and extracts. With ``unknown``
    the explicit value ``unknown`` is accepted too (``dates.UNKNOWN``: the source gives no date)."""

    def __init__(self, *, unknown: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unknown = unknown

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> str:
        if self.unknown and value == dates.UNKNOWN:
            return dates.UNKNOWN
        try:
            return dates.parse(value).text
        except dates.DateError as error:
            raise ValidationError(str(error)) from None


class Bool(Field[bool]):
    """true or false (no truthy strings or numbers)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class Number(Field[float]):
    """A number with optional bounds; ``integer`` requires a whole number (returned as int)."""

    def __init__(
        self,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_minimum: bool = False,
        integer: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.minimum = minimum
        self.maximum = maximum
        self.exclusive_minimum = exclusive_minimum
        self.integer = integer

    def check(self, value: Any) -> float:
        number = _ceiling(_number(value))
        if self.integer:
            if isinstance(number, float) and not number.is_integer():
                raise ValidationError("must be a whole number")
            number = int(number)
        if self.minimum is not None:
            if self.exclusive_minimum and number <= self.minimum:
                raise ValidationError(f"must be greater than {self.minimum:g}")
            if number < self.minimum:
                raise ValidationError(f"must be at least {self.minimum:g}")
        if self.maximum is not None and number > self.maximum:
            unit = f" {self.metadata['unit']}" if "dimension" in self.metadata else ""
            raise ValidationError(f"must be at most {self.maximum:g}{unit}")
        return number

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> float:
        return self.check(value)


def _unit_value(value: Any, dimension: Dimension, canonical: str) -> tuple[Any, str]:
    """Split ``{"value": v, "unit": u}``; a bare value is in the canonical unit."""
    if not isinstance(value, Mapping):
        return value, canonical
    unknown = sorted(set(value) - {"value", "unit"})
    if unknown:
        raise ValidationError(f"unknown field(s) {', '.join(unknown)}; a measure is {{value, unit}}")
    if "value" not in value or "unit" not in value:
        raise ValidationError("a measure object needs both value and unit")
    unit = value["unit"]
    if unit not in dimension.factors:
        raise ValidationError(f"unit {unit!r} is not allowed; allowed units: {', '.join(dimension.units)}")
    return value["value"], str(unit)


class Measure(Number):
    """A number in the canonical unit, or ``{"value": number, "unit": u}`` converted to it."""

    def __init__(self, *, dimension: Dimension, unit: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dimension = dimension
        self.unit = unit

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> float:
        raw, unit = _unit_value(value, self.dimension, self.unit)
        number = _number(raw)
        return self.check(convert(number, unit, self.unit, self.dimension))


COMPARATORS = ("<", "<=", ">=", ">")
"""FHIR R4 Quantity.comparator codes (quantity-comparator): "How the value should be understood and
represented - whether the actual value is greater or less than the stated value due to measurement
issues"."""


class Bounded(Number):
    """A measurement that may be a bound or a range (data set, "Incomplete records": ``> 75 %``,
    ``90-95 %``): a number (or ``{value, unit}`` for a measure), ``{"comparator": "<"|"<="|">="|">",
    "value": v}``, or ``{"low": l, "high": h}`` with ``l < h``; each kept as given, in the canonical
    unit. In FHIR a bound is Quantity.comparator and a range a Range."""

    def __init__(self, *, dimension: Dimension | None = None, unit: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dimension = dimension
        self.unit = unit

    def _one(self, raw: Any, unit: str | None) -> float:
        number = _number(raw)
        if self.dimension is not None and self.unit is not None and unit is not None:
            number = convert(number, unit, self.unit, self.dimension)
        return self.check(number)

    def _admits_some(self, comparator: str, bound: float) -> None:
        """A bound that no allowed value meets (``> 100 %``, ``< 0 mm``) says something impossible, as
        a value past the scale would: refused the same way."""
        top, bottom = self.maximum, self.minimum
        if comparator == ">" and top is not None and bound >= top:
            raise ValidationError(f"no value is > {bound:g}: the scale ends at {top:g}")
        if comparator == "<" and bottom is not None and not self.exclusive_minimum and bound <= bottom:
            raise ValidationError(f"no value is < {bound:g}: the scale starts at {bottom:g}")

    def _unit(self, value: Mapping[str, Any]) -> str | None:
        if "unit" not in value:
            return self.unit
        if self.dimension is None:
            raise ValidationError(
                "takes no unit here (a percentage, or a result whose unit is its own field)"
            )
        if value["unit"] not in self.dimension.factors:
            units = ", ".join(self.dimension.units)
            raise ValidationError(f"unit {value['unit']!r} is not allowed; allowed units: {units}")
        return str(value["unit"])

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Any:
        if not isinstance(value, Mapping):
            if isinstance(value, str):  # a CSV cell that is no number, bound or range (``90-95``)
                raise ValidationError(
                    "must be a number, a bound (>75, <=2) or a range written with two dots (90..95); "
                    "in JSON {comparator, value} or {low, high}"
                )
            return self._one(value, self.unit)
        unknown = sorted(set(value) - {"value", "unit", "comparator", "low", "high"})
        if unknown:
            raise ValidationError(
                f"unknown field(s) {', '.join(unknown)}; a measure is {{value, unit}}, a bound "
                "{comparator, value} or a range {low, high}"
            )
        keys = set(value) - {"unit"}
        unit = self._unit(value)
        if keys == {"value"}:
            if self.dimension is not None and "unit" not in value:
                raise ValidationError("a measure object needs both value and unit")
            return self._one(value["value"], unit)
        if keys == {"comparator", "value"}:
            if value["comparator"] not in COMPARATORS:
                raise ValidationError(f"comparator must be one of: {', '.join(COMPARATORS)}")
            bound = self._one(value["value"], unit)
            self._admits_some(value["comparator"], bound)
            return {"comparator": value["comparator"], "value": bound}
        if keys == {"low", "high"}:
            low, high = self._one(value["low"], unit), self._one(value["high"], unit)
            if not low < high:
                raise ValidationError(
                    "a range needs low < high (a single value is given as a plain number, not a range)"
                )
            return {"low": low, "high": high}
        raise ValidationError(
            "must be a number, {value, unit}, a bound {comparator, value} or a range {low, high}"
        )


class Dimensions(Field[list[Any]]):
    """One to three tumour dimensions, largest first, in cm (or ``{"value": [...], "unit": "mm"}``).

    The largest (first) may be a bound ``{"comparator": c, "value": v}`` ("> 10 cm": data set,
    "Incomplete records"); the others are numbers, so the list keeps its 1-3 numbers shape. After a
    ``<``/``<=`` bound the other dimensions must be below / not above its value; after ``>``/``>=`` any
    size fits (the largest is unknown above v)."""

    MAX = 3

    def __init__(self, *, dimension: Dimension, unit: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dimension = dimension
        self.unit = unit
        # an optional size is [] when absent; a required one has at least one dimension
        self.min_items = 1 if self.required else 0

    def _size(self, raw: Any, unit: str) -> float:
        number = _ceiling(convert(_number(raw), unit, self.unit, self.dimension))
        if number <= 0:
            raise ValidationError("dimensions must be greater than 0")
        return number

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> list[Any]:
        raw, unit = _unit_value(value, self.dimension, self.unit)
        if not isinstance(raw, list) or not self.min_items <= len(raw) <= self.MAX:
            raise ValidationError(f"must be a list of {self.min_items} to {self.MAX} numbers")
        out: list[Any] = []
        for i, item in enumerate(raw):
            if isinstance(item, Mapping):
                if i > 0:
                    raise ValidationError("only the largest (first) dimension may be a bound")
                if set(item) != {"comparator", "value"} or item["comparator"] not in COMPARATORS:
                    raise ValidationError(
                        f"a bound on the largest dimension is {{comparator, value}}, comparator one of: "
                        f"{', '.join(COMPARATORS)}"
                    )
                out.append({"comparator": item["comparator"], "value": self._size(item["value"], unit)})
            else:
                out.append(self._size(item, unit))
        first = out[0] if out else None
        rest: list[float] = out[1:]
        if isinstance(first, dict):
            top, strict = first["value"], first["comparator"] == "<"
            if first["comparator"] in ("<", "<=") and any(d >= top if strict else d > top for d in rest):
                raise ValidationError(
                    f"dimensions must be given largest first: the largest is {first['comparator']} {top:g}"
                )
        elif any(a < b for a, b in itertools.pairwise(out)):
            raise ValidationError("dimensions must be given largest first")
        if any(a < b for a, b in itertools.pairwise(rest)):
            raise ValidationError("dimensions must be given largest first")
        return out


class Code(Field[str]):
    """A value of a code table in mappings/codes.yaml (``integer``: the key read as a whole number)."""

    def __init__(self, table_name: str, *, integer: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table_name = table_name
        self.integer = integer

    def allowed(self) -> list[Any]:
        t = table(self.table_name)
        keys = t.keys()
        # data-absent reasons (``unknown``) stay strings beside an integer table's numbers
        return [*(int(k) for k in keys), *t.absent] if self.integer else t.accepted()

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Any:
        allowed = self.allowed()
        if isinstance(value, bool) or value not in allowed:
            raise ValidationError(f"must be one of: {', '.join(str(a) for a in allowed)}")
        return value


class BoundedCode(Code):
    """A grade of an ordinal code table that may also be a bound on it (data set, "Incomplete records":
    "a grade may be a bound (Clavien-Dindo ``< IIIa``)"): a value of the table (or a data-absent
    reason), or ``{"comparator": "<"|"<="|">="|">", "value": grade}``. A bound must leave at least one
    grade of the table (``< I`` leaves none) and exclude at least one (``<= V`` says nothing)."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> Any:
        if not isinstance(value, Mapping):
            if isinstance(value, str) and _CODE_BOUND.match(value):  # a CSV cell such as ``<IIIa``
                raise ValidationError("a bound on a grade is {comparator, value} (CSV: <IIIa, >=IIIa)")
            return super()._deserialize(value, attr, data, **kwargs)
        unknown = sorted(set(value) - {"comparator", "value"})
        if unknown or set(value) != {"comparator", "value"}:
            raise ValidationError("a bound on a grade is {comparator, value}")
        if value["comparator"] not in COMPARATORS:
            raise ValidationError(f"comparator must be one of: {', '.join(COMPARATORS)}")
        order = table(self.table_name).keys()
        if value["value"] not in order:
            raise ValidationError(f"the grade of a bound must be one of: {', '.join(order)}")
        within = grades_within(value, order)
        if not within:
            raise ValidationError(f"no grade is {value['comparator']} {value['value']}")
        if len(within) == len(order):
            raise ValidationError(
                f"every grade is {value['comparator']} {value['value']}: the bound says nothing"
            )
        return {"comparator": value["comparator"], "value": value["value"]}


_ORDER: dict[str, Callable[[int, int], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
    ">": operator.gt,
}
_CODE_BOUND = re.compile(r"^\s*(<=|>=|<|>)")


def grades_within(value: Any, order: list[str]) -> list[str]:
    """The grades of an ordinal table (``order``, lowest first) a recorded grade may be: itself, or
    every grade a bound ``{comparator, value}`` admits (``< IIIa`` -> I, II); [] for anything else
    (a data-absent reason, none)."""
    if isinstance(value, Mapping):
        if value.get("value") not in order:
            return []
        at = order.index(value["value"])
        keep = _ORDER[value["comparator"]]
        return [g for i, g in enumerate(order) if keep(i, at)]
    return [value] if value in order else []


# Constructors used by the schemas: required-ness, description and metadata in one call.


def text(description: str, *, required: bool = False, max_length: int | None = TEXT_MAX) -> Text:
    return Text(max_length=max_length, **_options(required, description))


def uri(description: str, *, required: bool = False, max_length: int | None = TEXT_MAX) -> Uri:
    return Uri(max_length=max_length, **_options(required, description))


def case_id(description: str, *, max_length: int) -> CaseId:
    return CaseId(max_length=max_length, **_options(True, description))


def source_uri(description: str, *, max_length: int) -> SourceUri:
    return SourceUri(max_length=max_length, **_options(True, description))


def date(description: str, *, required: bool = False, unknown: bool = False) -> Date:
    """A date field; ``unknown`` also accepts the value ``unknown`` (a source that gives no date)."""
    extra = {"unknown": True} if unknown else None
    return Date(unknown=unknown, **_options(required, description, extra))


def boolean(description: str, *, required: bool = False) -> Bool:
    return Bool(**_options(required, description))


def code(table_name: str, description: str, *, required: bool = False, integer: bool = False) -> Code:
    return Code(table_name, integer=integer, **_options(required, description, {"table": table_name}))


def bounded_code(table_name: str, description: str) -> BoundedCode:
    return BoundedCode(table_name, **_options(False, description, {"table": table_name, "bounded": True}))


def number(
    description: str,
    *,
    required: bool = False,
    minimum: float | None = 0,
    maximum: float | None = None,
    integer: bool = False,
) -> Number:
    return Number(minimum=minimum, maximum=maximum, integer=integer, **_options(required, description))


def percent(description: str) -> Number:
    return Number(minimum=0, maximum=100, **_options(False, description, {"unit": "%"}))


def bounded_number(description: str, *, required: bool = False, minimum: float | None = 0) -> Bounded:
    """A number that may be a bound or a range, its unit given elsewhere (a lab result's ``unit``)."""
    return Bounded(minimum=minimum, **_options(required, description, {"bounded": True}))


def bounded_percent(description: str) -> Bounded:
    return Bounded(minimum=0, maximum=100, **_options(False, description, {"unit": "%", "bounded": True}))


def bounded_measure(dimension: Dimension, unit: str, description: str) -> Bounded:
    meta = {"unit": unit, "dimension": dimension.name, "units": dimension.units, "bounded": True}
    return Bounded(
        dimension=dimension,
        unit=unit,
        minimum=0,
        maximum=_dimension_max(dimension, unit),
        **_options(False, description, meta),
    )


def measure(dimension: Dimension, unit: str, description: str, *, required: bool = False) -> Measure:
    meta = {"unit": unit, "dimension": dimension.name, "units": dimension.units}
    maximum = _dimension_max(dimension, unit)
    return Measure(
        dimension=dimension, unit=unit, minimum=0, maximum=maximum, **_options(required, description, meta)
    )


def _dimension_max(dimension: Dimension, unit: str) -> float | None:
    """A duration is at most a human life (``units.duration_max``); other dimensions only the ceiling."""
    return duration_max(unit) if dimension is DURATION else None


def dimensions(dimension: Dimension, unit: str, description: str, *, required: bool = False) -> Dimensions:
    meta = {"unit": unit, "dimension": dimension.name, "units": dimension.units}
    options = _options(required, description, meta)
    if not required:
        options["load_default"] = list  # absent: [] like any list
    return Dimensions(dimension=dimension, unit=unit, **options)
