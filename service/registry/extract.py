"""The registry extract: one record per case, as CSV (the flat column set of the CSV import) or NDJSON.

CSV columns: exactly ``service.model.csv_flat.column_names()`` (same names, order and cell format as
``POST /cases/import`` reads), then, with ``derived=True``, the derived columns (``DERIVED_PREFIX``).
The CSV import rejects unknown columns, so a file meant to be imported again is pulled with
``derived=False``: export -> import then gives back the same cases.

NDJSON: one JSON object per line, the canonical case, plus a ``derived`` object (same values as the
derived columns, names without the prefix) with ``derived=True``. NDJSON is lossless; the CSV layout
holds a fixed number of entries per repeating group (``csv_flat.MAX_ENTRIES``), and a case with more
keeps the first ones in the CSV and names the cut groups in ``derived_csv_truncated``.

De-identified (``service.registry.deidentify``): both forms drop the direct identifiers and free text,
pseudonymise ``case_id`` and ``source_system`` with the recipient's key, keep the diagnosis year only
and turn dates into ``<name>_days`` intervals from the diagnosis date; the CSV columns follow.

Both writers are generators of text lines, so a streaming HTTP response sends row by row. Every CSV
cell a spreadsheet would run as a formula (a free text starting with ``=``, ``+``, ``-``, ``@``, tab,
CR or LF) is neutralised with a leading single quote (``csv_flat.neutralise``); plain numbers such as
``-1.5`` stay numbers, and the import reads every cell back as it was (``csv_flat.restore``).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from marshmallow import Schema, fields

from service.model import csv_flat
from service.model.schema import CaseSchema
from service.registry import deidentify as deid
from service.registry import outcomes

DERIVED_PREFIX = "derived_"
MONTH_DECIMALS = outcomes.MONTH_DECIMALS


@dataclass(frozen=True)
class DerivedColumn:
    name: str
    """Name without ``DERIVED_PREFIX`` (the key in NDJSON's ``derived`` object)."""
    type: str
    definition: str


DERIVED: tuple[DerivedColumn, ...] = (
    DerivedColumn(
        "age_at_diagnosis_years",
        'integer [years]; "90+" when over 89 in de-identified extracts',
        "`patient.age_at_diagnosis`: full years from `patient.birth_date` to `diagnosis.date`, or the "
        "age entered when the birth date is unknown.",
    ),
    DerivedColumn(
        "diagnosis_to_surgery_days",
        "integer [days]",
        "Days from `diagnosis.date` to the first (earliest) `surgery[].date`; empty when not operated.",
    ),
    DerivedColumn(
        "recurrence",
        "boolean",
        "Operated cases: `true` when a follow-up on or after the first surgery has a `disease_status` "
        "other than `ned`; `false` when none has and the record shows the patient after the surgery "
        "(a follow-up assessment, or a last contact after it); empty (unknown) otherwise and when not "
        "operated.",
    ),
    DerivedColumn(
        "dfs_months",
        f"number [months], {MONTH_DECIMALS} decimal; whole months when it used a partial date",
        "Disease-free survival, operated cases: months (days / 30.4375) from the first surgery to the "
        "first follow-up not `ned` or death, whichever is first, else to `outcome.last_contact`; empty "
        "when not operated. At the precision its inputs allow: a time that used a month- or year-only "
        "date (taken at its midpoint) is given in whole months.",
    ),
    DerivedColumn(
        "dfs_event",
        "integer 1 / 0",
        "1 when `dfs_months` ends at recurrence/persistent disease or death, 0 when censored at the last "
        "contact.",
    ),
    DerivedColumn(
        "dfs_imprecise",
        "boolean",
        "`true` when `dfs_months` used a year-only date (taken at its midpoint, up to six months off): "
        "even its whole months are finer than its inputs; `false` otherwise; empty when not operated.",
    ),
    DerivedColumn(
        "os_months",
        f"number [months], {MONTH_DECIMALS} decimal; whole months when it used a partial date",
        "Overall survival: months from `diagnosis.date` to `outcome.death_date` (dead; the last contact "
        "when the death date is missing), else to `outcome.last_contact`. At the precision its inputs "
        "allow: a time that used a month- or year-only date (taken at its midpoint) is given in whole "
        "months (2019 to 2021: 24, not 24.02).",
    ),
    DerivedColumn(
        "os_event",
        "integer 1 / 0",
        "1 when the patient died (`outcome.vital_status` = dead), 0 when censored at the last contact.",
    ),
    DerivedColumn(
        "os_imprecise",
        "boolean",
        "`true` when `os_months` used a year-only date (taken at its midpoint, up to six months off): "
        "even its whole months are finer than its inputs; `false` otherwise; empty when unknown.",
    ),
)
TRUNCATED = DerivedColumn(
    "csv_truncated",
    "text",
    "CSV only: repeating groups with more entries than the CSV layout holds, `;`-joined as "
    "`<group path>: <N> entries, first <M> in this file`; empty when the case fits. NDJSON carries "
    "every entry.",
)


@dataclass(frozen=True)
class Options:
    derived: bool = True
    deidentified: bool = False
    key: bytes = b""
    """The recipient's pseudonym key (``deidentify.recipient_key``); required when ``deidentified``."""

    def __post_init__(self) -> None:
        if self.deidentified and not self.key:
            raise ValueError("de-identified extracts need a pseudonym key")


# ---- derived values ---------------------------------------------------------------------------------


def _months(value: outcomes.TimeToEvent | None) -> float | None:
    """The time at the precision its inputs allow (``outcomes.reported``): 0.1 month when exact, whole
    months when it used a partial date."""
    return None if value is None else value.rounded_months


def derived_values(case: Mapping[str, Any], *, deidentified: bool = False) -> dict[str, Any]:
    """The derived values of a canonical case (keys: ``DerivedColumn.name``), None when unknown."""
    dfs = outcomes.disease_free_survival(case)
    os_ = outcomes.overall_survival(case)
    years = case["patient"]["age_at_diagnosis"]
    return {
        "age_at_diagnosis_years": deid.age(years) if deidentified else years,
        "diagnosis_to_surgery_days": outcomes.diagnosis_to_surgery_days(case),
        "recurrence": outcomes.recurrence(case),
        "dfs_months": _months(dfs),
        "dfs_event": None if dfs is None else dfs.event,
        "dfs_imprecise": None if dfs is None else dfs.imprecise,
        "os_months": _months(os_),
        "os_event": None if os_ is None else os_.event,
        "os_imprecise": None if os_ is None else os_.imprecise,
    }


# ---- fitting the CSV layout -------------------------------------------------------------------------


def fit_layout(case: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of the case cut to the entries the CSV layout holds, and what was cut."""
    cut: list[str] = []
    fitted = _fit(CaseSchema(), copy.deepcopy(dict(case)), "", "", cut)
    return fitted, cut


def _fit(schema: Schema, data: dict[str, Any], where: str, group: str, cut: list[str]) -> dict[str, Any]:
    for name, field in schema.fields.items():
        value = data.get(name)
        key = f"{group}.{name}" if group else name
        path = f"{where}.{name}" if where else name
        if isinstance(field, fields.Nested) and isinstance(value, dict):
            _fit(_nested(field), value, path, key, cut)
        elif isinstance(field, fields.List) and isinstance(field.inner, fields.Nested) and value:
            limit = csv_flat.MAX_ENTRIES[key]
            if len(value) > limit:
                cut.append(f"{path}: {len(value)} entries, first {limit} in this file")
                data[name] = value = value[:limit]
            for i, entry in enumerate(value):
                if isinstance(entry, dict):
                    _fit(_nested(field.inner), entry, f"{path}[{i}]", key, cut)
    return data


def _nested(field: fields.Nested) -> Schema:
    schema = field.schema
    assert isinstance(schema, Schema)
    return schema


# ---- columns ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str
    path: csv_flat.Path
    kind: str


def _dotted(path: csv_flat.Path) -> str:
    return ".".join(step for step in path if isinstance(step, str))


@cache
def _deidentified_columns() -> tuple[_Column, ...]:
    removed = deid.REMOVED | set(deid.free_text_paths())
    out: list[_Column] = []
    for c in csv_flat.columns():
        dotted = _dotted(c.path)
        if dotted == deid.YEAR_OF:
            name = c.name.removesuffix(str(c.path[-1])) + deid.YEAR
            out.append(_Column(name, (*c.path[:-1], deid.YEAR), "integer"))
            continue
        if any(dotted == r or dotted.startswith(r + ".") for r in removed):
            continue
        if c.kind == "date":
            leaf = str(c.path[-1]) + deid.DAYS_SUFFIX
            out.append(_Column(c.name + deid.DAYS_SUFFIX, (*c.path[:-1], leaf), "integer"))
        else:
            out.append(_Column(c.name, c.path, c.kind))
    return tuple(out)


def case_columns(options: Options) -> list[str]:
    """The case columns (without derived ones): the import's columns, or the de-identified set."""
    if options.deidentified:
        return [c.name for c in _deidentified_columns()]
    return csv_flat.column_names()


def columns(options: Options) -> list[str]:
    """Every column of the CSV extract, in order."""
    names = case_columns(options)
    if options.derived:
        names += [DERIVED_PREFIX + d.name for d in (*DERIVED, TRUNCATED)]
    return names


# ---- writers ----------------------------------------------------------------------------------------


def _get(data: Any, path: csv_flat.Path) -> Any:
    for step in path:
        if isinstance(step, int):
            if not isinstance(data, list) or step >= len(data):
                return None
            data = data[step]
        elif isinstance(data, Mapping):
            data = data.get(step)
        else:
            return None
    return data


def _cell(value: Any) -> str:
    """A cell as ``csv_flat`` writes one: empty, ``true``/``false``, ``;``-joined lists, ``repr`` floats."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return csv_flat.SEPARATOR.join(_cell(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_row(case: Mapping[str, Any], options: Options) -> list[str]:
    """The cells of one canonical case, in ``columns(options)`` order."""
    fitted, cut = fit_layout(case)
    if options.deidentified:
        clean = deid.deidentify(fitted, options.key)
        cells = [_cell(_get(clean, c.path)) for c in _deidentified_columns()]
    else:
        flat = csv_flat.flatten(fitted)
        cells = [flat[name] for name in csv_flat.column_names()]
    if options.derived:
        values = derived_values(case, deidentified=options.deidentified)
        cells += [_cell(values[d.name]) for d in DERIVED]
        cells.append(csv_flat.SEPARATOR.join(cut))
    return cells


def csv_lines(cases: Iterable[Mapping[str, Any]], options: Options) -> Iterator[str]:
    """The CSV text, header first, one line (``\\n``-terminated) per case."""
    buffer = io.StringIO()

    def line(cells: list[str]) -> str:
        csv_flat.write_row(buffer, cells)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate(0)
        return text

    yield line(columns(options))
    for case in cases:
        yield line([csv_flat.neutralise(cell) for cell in csv_row(case, options)])


def record(case: Mapping[str, Any], options: Options) -> dict[str, Any]:
    """The NDJSON object of one canonical case."""
    out = deid.deidentify(case, options.key) if options.deidentified else dict(case)
    if options.derived:
        out["derived"] = derived_values(case, deidentified=options.deidentified)
    return out


def ndjson_lines(cases: Iterable[Mapping[str, Any]], options: Options) -> Iterator[str]:
    """One JSON object per line, ``\\n``-terminated."""
    for case in cases:
        yield orjson.dumps(record(case, options)).decode() + "\n"
