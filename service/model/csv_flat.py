"""The case series as CSV: one row per case, the flat column set of the data set.

Column names are the field path joined with ``_``; an entry of a repeating group carries its 1-based
number right after the group name: ``surgery1_ivc_management_method``,
``follow_up2_imaging1_findings``, ``diagnosis_labs3_value``. Each repeating group has a fixed
maximum number of entries (``MAX_ENTRIES``). Lists of codes and tumour dimensions are ``;``-joined in
one cell. An empty cell is an absent value; booleans are ``true``/``false``; measured values are in
their canonical unit.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from marshmallow import Schema, fields

from service.errors import Issue, Unprocessable
from service.model import fields as f
from service.model.schema import CaseSchema
from service.model.validate import validate_case

# Entries per repeating group (dotted field path without indices) that the CSV layout holds.
MAX_ENTRIES: dict[str, int] = {
    "patient.history": 4,
    "patient.performance_status": 3,
    "presentation.symptoms": 6,
    "diagnosis.imaging": 6,
    "diagnosis.tumour_size": 4,
    "diagnosis.metastases": 6,
    "diagnosis.uncertain_lesions": 4,
    "diagnosis.labs": 6,
    "surgery": 2,
    "surgery.organs_resected": 4,
    "surgery.renal_veins": 2,
    "surgery.events": 3,
    "pathology.ihc": 10,
    "pathology.metastatic_lesions": 4,
    "postoperative.complications": 4,
    "postoperative.renal_function": 6,
    "therapies": 6,
    "therapies.drugs": 3,
    "follow_up": 8,
    "follow_up.renal_function": 3,
    "follow_up.imaging": 2,
    "follow_up.uncertain_lesions": 2,
    "care_plan.activities": 8,
}
SEPARATOR = ";"
RANGE = ".."
"""Between the ends of a range in a cell (``90..95``): ``-`` would clash with negative numbers and with
the spreadsheet formula guard."""
_INTEGER = re.compile(r"[+-]?[0-9]+")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")
"""A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV Injection": =, +, -, @,
tab, carriage return; and line feed, which some spreadsheets also skip before a formula)."""
_NUMERIC = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
"""A plain number (``-1.5``, ``-3``, ``1e-05``): a spreadsheet reads it as that number, never a formula."""


def neutralise(cell: str) -> str:
    """A cell a spreadsheet cannot run: prefixed with a single quote (OWASP's remedy) when it starts with
    a formula character, unless it is a plain number. A cell that only looks escaped (quotes, then a
    formula character) gets one more quote, so ``restore`` gives every cell back exactly."""
    if cell.lstrip("'").startswith(FORMULA_STARTS) and not _NUMERIC.fullmatch(cell):
        return "'" + cell
    return cell


def restore(cell: str) -> str:
    """The inverse of ``neutralise``: what the import reads from a cell the extract wrote."""
    if cell.startswith("'") and cell.lstrip("'").startswith(FORMULA_STARTS):
        return cell[1:]
    return cell


Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Column:
    name: str
    path: Path
    kind: str  # text | code | date | number | integer | boolean | codes | numbers | bound | bound-code
    field: fields.Field[Any]


@cache
def columns() -> tuple[Column, ...]:
    """Every column of the layout, in data set order."""
    return tuple(_columns(CaseSchema(), "", (), ""))


def column_names() -> list[str]:
    return [c.name for c in columns()]


def _columns(schema: Schema, prefix: str, path: Path, group: str) -> Iterable[Column]:
    for name, field in schema.fields.items():
        key = f"{group}.{name}" if group else name
        if isinstance(field, fields.Nested):
            yield from _columns(_nested(field), f"{prefix}{name}_", (*path, name), key)
        elif isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
            for k in range(MAX_ENTRIES[key]):
                yield from _columns(_nested(field.inner), f"{prefix}{name}{k + 1}_", (*path, name, k), key)
        else:
            yield Column(f"{prefix}{name}", (*path, name), _kind(field), field)


def _nested(field: fields.Nested) -> Schema:
    schema = field.schema
    assert isinstance(schema, Schema)
    return schema


def _kind(field: fields.Field[Any]) -> str:
    if isinstance(field, fields.List):
        return "codes"
    if isinstance(field, f.Dimensions):
        return "numbers"
    if isinstance(field, f.Bool):
        return "boolean"
    if isinstance(field, f.BoundedCode):
        return "bound-code"
    if isinstance(field, f.Code):
        return "integer" if field.integer else "code"
    if isinstance(field, f.Bounded):
        return "bound"
    if isinstance(field, f.Date):
        return "date"
    if isinstance(field, f.Number):
        return "integer" if field.integer else "number"
    return "text"


def group_sizes(case: Mapping[str, Any]) -> Iterable[tuple[str, str, int]]:
    """(path, group key, number of entries) of every repeating group of objects in a case."""
    yield from _sizes(CaseSchema(), case, "", "")


def _sizes(schema: Schema, data: Mapping[str, Any], path: str, group: str) -> Iterable[tuple[str, str, int]]:
    for name, field in schema.fields.items():
        value = data.get(name)
        key = f"{group}.{name}" if group else name
        where = f"{path}.{name}" if path else name
        if isinstance(field, fields.Nested) and isinstance(value, Mapping):
            yield from _sizes(_nested(field), value, where, key)
        elif (
            isinstance(field, fields.List)
            and isinstance(field.inner, fields.Nested)
            and isinstance(value, list)
        ):
            yield where, key, len(value)
            for i, entry in enumerate(value):
                if isinstance(entry, Mapping):
                    yield from _sizes(_nested(field.inner), entry, f"{where}[{i}]", key)


# ---- flatten ------------------------------------------------------------------------------------


def flatten(case: Mapping[str, Any]) -> dict[str, str]:
    """One CSV row (column -> cell) for a canonical case; more entries than the layout holds raise."""
    too_many = [
        Issue(
            "too-long",
            f"{where}: {size} entries; the CSV layout holds at most {MAX_ENTRIES[key]}",
            where,
        )
        for where, key, size in group_sizes(case)
        if size > MAX_ENTRIES[key]
    ]
    if too_many:
        raise Unprocessable(too_many)
    return {c.name: _cell(_get(case, c.path), c.kind) for c in columns()}


def _get(data: Any, path: Path) -> Any:
    for step in path:
        if isinstance(step, int):
            if not isinstance(data, list) or step >= len(data):
                return None
        elif not isinstance(data, Mapping):
            return None
        data = data[step] if isinstance(step, int) else data.get(step)
    return data


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "codes":
        return SEPARATOR.join(str(v) for v in value)
    if kind == "numbers":  # the largest dimension may be a bound: ``>10;6``
        return SEPARATOR.join(_cell(v, "bound") for v in value)
    if kind in ("number", "integer"):
        return _number(value)
    if kind == "bound":
        if isinstance(value, Mapping) and "comparator" in value:
            return f"{value['comparator']}{_number(value['value'])}"
        if isinstance(value, Mapping):
            return f"{_number(value['low'])}{RANGE}{_number(value['high'])}"
        return _number(value)
    if kind == "bound-code" and isinstance(value, Mapping):
        return f"{value['comparator']}{value['value']}"
    return str(value)


def _number(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


# ---- unflatten ----------------------------------------------------------------------------------


def unflatten(row: Mapping[str, str | None]) -> dict[str, Any]:
    """A case-like dict from a row (not yet validated: pass it to validate_case).

    Empty cells are absent values. Cells that do not parse as their column's type are passed on as
    text, so that validation names the field. An unknown column raises.
    """
    known = {c.name: c for c in columns()}
    unknown = [name for name in row if name not in known]
    if unknown:
        raise Unprocessable([Issue("invalid", f"{name}: unknown column", name) for name in unknown])
    case: dict[str, Any] = {}
    for name, cell in row.items():
        if cell is None or cell == "":
            continue
        column = known[name]
        _put(case, column.path, _parse(restore(cell), column.kind))
    built: dict[str, Any] = _lists(case)
    return built


def _put(data: dict[Any, Any], path: Path, value: Any) -> None:
    for step in path[:-1]:
        data = data.setdefault(step, {})
    data[path[-1]] = value


def _lists(data: Any) -> Any:
    """Turn the {index: entry} dicts built by _put into lists; a missing entry becomes {}."""
    if not isinstance(data, dict):
        return data
    if data and all(isinstance(k, int) for k in data):
        return [_lists(data.get(i, {})) for i in range(max(data) + 1)]
    return {k: _lists(v) for k, v in data.items()}


def _parse(cell: str, kind: str) -> Any:
    if kind == "text":
        return cell
    raw = cell.strip()
    if kind in ("code", "date"):
        return raw
    if kind == "codes":
        return [part.strip() for part in raw.split(SEPARATOR)]
    if kind == "numbers":
        return [_parse_bound(part.strip()) for part in raw.split(SEPARATOR)]
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw.lower(), cell)
    if kind == "bound":
        return _parse_bound(raw)
    if kind == "bound-code":  # ``<IIIa`` -> {comparator, value}; a grade as it is
        found = _BOUND.match(raw)
        return {"comparator": found.group(1), "value": found.group(2)} if found else raw
    return _parse_number(raw)


_BOUND = re.compile(r"^(<=|>=|<|>)\s*(\S+)$")


def _parse_bound(raw: str) -> Any:
    """``>75`` -> {comparator, value}; ``90..95`` -> {low, high}; else a number (what does not parse is
    passed on as text, so validation names the field)."""
    found = _BOUND.match(raw)
    if found:
        return {"comparator": found.group(1), "value": _parse_number(found.group(2))}
    low, sep, high = raw.partition(RANGE)
    if sep:
        return {"low": _parse_number(low.strip()), "high": _parse_number(high.strip())}
    return _parse_number(raw)


def _parse_number(raw: str) -> Any:
    """A number in ASCII digits only (``float`` would take ``١٢``, ``nan`` and ``inf``); else the text, which
    the model then refuses as not a number, naming the column."""
    if _INTEGER.fullmatch(raw):
        return int(raw)
    if _NUMERIC.fullmatch(raw):
        return float(raw)
    return raw


# ---- files --------------------------------------------------------------------------------------


def write_row(out: io.StringIO, cells: list[str]) -> None:
    """One ``\n``-terminated CSV record. The csv module quotes a cell only for the line terminator's
    own characters, so a bare CR inside a cell would be written raw and split the record for readers
    that take CR as a line break (a row injection); a record holding one is written fully quoted,
    which every CSV reader reads back the same (RFC 4180: "Each field may or may not be enclosed in
    double quotes")."""
    if any("\r" in cell for cell in cells):
        csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL).writerow(cells)
    else:
        csv.writer(out, lineterminator="\n").writerow(cells)


def write_csv(cases: Iterable[Mapping[str, Any]]) -> str:
    """A CSV text (header + one row per canonical case) with every column of the layout."""
    out = io.StringIO()
    names = column_names()
    write_row(out, names)
    for case in cases:
        flat = flatten(case)
        write_row(out, [neutralise(flat.get(name, "")) for name in names])
    return out.getvalue()


def read_csv(
    text: str, on_row: Callable[[int], None] | None = None
) -> list[tuple[int, dict[str, Any] | Unprocessable]]:
    """Each data row validated, numbered by the file line it starts on (the header is line 1, as a
    spreadsheet numbers it): the canonical case, or the Unprocessable with the problems, each message
    ``line N: column: rule`` naming the sheet's column (the issue's expression keeps the case path).
    Columns may be omitted (all empty); unknown columns raise (with a hint when the file looks
    separated by semicolons or tabs), as does a column given twice, and so does text the csv module
    cannot read (a NUL, a field over its size limit): the whole file is refused. ``on_row(n)`` is told
    as data row n is read (progress)."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        return _read_rows(reader, on_row or (lambda _n: None))
    except csv.Error as error:
        # The csv module's messages name the rule, never the data ("line contains NUL").
        raise Unprocessable(
            [Issue("invalid", f"line {reader.line_num}: not readable as CSV: {error}")]
        ) from None


def _read_rows(
    reader: Any, on_row: Callable[[int], None]
) -> list[tuple[int, dict[str, Any] | Unprocessable]]:
    header: list[str] = next(reader, [])
    known = set(column_names())
    unknown = [name for name in header if name not in known]
    if unknown:
        hint = _separator_hint(header)
        raise Unprocessable(
            [Issue("invalid", f"header: unknown column {name}{hint}", name) for name in unknown]
        )
    # a column given twice (patient_sex: female, then male) has no one value: refused as an unknown
    # column is, never the last cell kept (review 15, M5)
    repeated = sorted({name for name in header if header.count(name) > 1}, key=header.index)
    if repeated:
        raise Unprocessable(
            [Issue("invalid", f"header: column {name} given more than once", name) for name in repeated]
        )
    results: list[tuple[int, dict[str, Any] | Unprocessable]] = []
    end = reader.line_num
    for cells in reader:
        line, end = end + 1, reader.line_num
        if not cells:  # a blank line, skipped as csv.DictReader does
            continue
        on_row(len(results) + 1)
        if len(cells) > len(header):
            error = Unprocessable([Issue("invalid", f"line {line}: more cells than header columns")])
            results.append((line, error))
            continue
        row = dict(zip(header, cells, strict=False))
        try:
            results.append((line, validate_case(unflatten(row))))
        except Unprocessable as error:
            issues = [
                Issue(i.code, f"line {line}: {sheet_message(i.diagnostics)}", i.expression, i.severity)
                for i in error.issues
            ]
            results.append((line, Unprocessable(issues)))
    return results


def _separator_hint(header: list[str]) -> str:
    """Why a header is unknown when a spreadsheet saved it with another separator."""
    for separator, name in ((";", "semicolon"), ("\t", "tab")):
        if len(header) == 1 and separator in header[0]:
            return (
                f" (the file looks {name}-separated; columns must be separated by commas: save it as "
                "CSV with comma as the field separator)"
            )
    return ""


def sheet_message(diagnostics: str) -> str:
    """``path: rule`` from case validation with the path given as the sheet's column name
    (``patient.sex`` -> ``patient_sex``); a path to a group of columns names them with ``*``
    (``surgery1_ivc_management_*``); a path no column holds is kept."""
    path, sep, rule = diagnostics.partition(": ")
    if not sep:
        return diagnostics
    return f"{_sheet_name(path)}: {rule}"


def _path_text(path: Path) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else (f".{step}" if text else step)
    return text


@cache
def _columns_by_path() -> dict[str, str]:
    return {_path_text(c.path): c.name for c in columns()}


def _sheet_name(path: str) -> str:
    by_path = _columns_by_path()
    if path in by_path:
        return by_path[path]
    inside = [name for p, name in by_path.items() if p.startswith((f"{path}.", f"{path}["))]
    if not inside:
        return path
    first, last = min(inside), max(inside)  # the common prefix of all is that of these two
    size = next((k for k, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))
    return f"{first[:size]}*" if size else path
