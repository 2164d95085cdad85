"""The case entry and edit form, generated from the case JSON Schema (issue 16); no Flask in here.

One walk over ``service.model.jsonschema.case_json_schema()`` serves three things, so the form can
never drift from the model: ``build`` turns the schema and a flat set of values into a field tree
(objects -> fieldsets, arrays of objects -> one fieldset per item, arrays of codes -> checkboxes,
booleans -> a tri-state select, anyOf -> one input for the plain form plus the members of its object
forms); ``flatten`` turns a stored case into those flat values; ``parse`` turns a posted form back into
a case dict. Field names are element paths (``surgery.0.date``). An empty field means "not recorded"
and is left out, never 0 or false: whether what remains is a valid case is decided by the same
``Intake.prepare`` as ``POST /cases``, whose issue paths ``field_of`` maps back onto field names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from service.errors import BadRequest, Issue
from service.model.dates import PATTERN as DATE_PATTERN
from service.model.jsonschema import case_json_schema

CONTROLS = frozenset({"csrf_token", "_version", "_add", "_remove"})
"""Form controls that are not case elements (CSRF token, version shown, add/remove buttons)."""
MAX_ITEMS = 200
"""Highest item index a posted field may name (a bound on the work one request can ask for)."""
YES_NO = (("yes", True), ("no", False))
ABSENT: Any = object()
_INT = re.compile(r"^[+-]?[0-9]+$")
_DIGITS_MAX = 40
_INDEX = re.compile(r"0|[1-9][0-9]{0,5}")
_ISSUE_INDEX = re.compile(r"\[(\d+)\]")

Flat = dict[str, "str | list[str]"]


@cache
def root_schema() -> dict[str, Any]:
    return case_json_schema()


# ---- the schema, normalised ----------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One schema node after ``$ref`` and null are resolved: its non-null alternatives by kind."""

    title: str
    hint: str
    unit: str | None
    required: bool
    scalars: list[dict[str, Any]]
    objects: list[dict[str, Any]]
    arrays: list[dict[str, Any]]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return {**root_schema()["$defs"][name], **rest}
    return schema


def _alternatives(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives, anyOf/oneOf flattened, ``type: [x, "null"]`` and null enum values
    removed."""
    schema = _resolve(schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [alt for sub in schema[key] for alt in _alternatives(sub)]
    if schema.get("type") == "null":
        return []
    out = dict(schema)
    if isinstance(out.get("type"), list):
        kinds = [t for t in out["type"] if t != "null"]
        out["type"] = kinds[0] if len(kinds) == 1 else kinds
    if "enum" in out:
        out["enum"] = [v for v in out["enum"] if v is not None]
    return [out]


def _annotation(schema: dict[str, Any], key: str) -> Any:
    """An annotation found on the node or any of its nested alternatives (titles sit outside anyOf,
    units inside)."""
    schema = _resolve(schema)
    if key in schema:
        return schema[key]
    for sub in schema.get("anyOf", []) + schema.get("oneOf", []):
        found = _annotation(sub, key)
        if found is not None:
            return found
    return None


def shape(schema: dict[str, Any], name: str, required: bool) -> Shape:
    alts = _alternatives(schema)
    kinds: dict[str, list[dict[str, Any]]] = {"scalar": [], "object": [], "array": []}
    for alt in alts:
        kind = alt.get("type")
        kinds[kind if kind in ("object", "array") else "scalar"].append(alt)
    description = _annotation(schema, "description") or ""
    title = _annotation(schema, "title") or name.replace("_", " ").capitalize()
    return Shape(
        title=title,
        hint=description if description.rstrip(".") != title else "",
        unit=_annotation(schema, "x-unit"),
        required=required,
        scalars=kinds["scalar"],
        objects=kinds["object"],
        arrays=kinds["array"],
    )


def _properties(objects: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], bool]]:
    """The union of the object alternatives' members (first definition wins), each with whether every
    alternative that has it requires it."""
    out: dict[str, tuple[dict[str, Any], bool]] = {}
    for alt in objects:
        for key, sub in alt.get("properties", {}).items():
            needed = key in alt.get("required", []) and len(objects) == 1
            out.setdefault(key, (sub, needed))
    return out


def _is_code_list(array: dict[str, Any]) -> bool:
    items = _alternatives(array.get("items", {}))
    return len(items) == 1 and "enum" in items[0]


# ---- the field tree ------------------------------------------------------------------------------


@dataclass
class Field:
    """One input: ``kind`` is text, number, select or checkboxes."""

    name: str
    label: str
    hint: str
    kind: str
    required: bool = False
    value: str | list[str] = ""
    options: list[tuple[str, str]] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)
    error: str = ""
    node: str = "field"

    @property
    def id(self) -> str:
        return "f-" + self.name.replace(".", "-")


@dataclass
class Group:
    """A fieldset; ``items`` set for an array (one Group per item, with Add and Remove buttons);
    ``optional_forms`` for the object forms of an anyOf (a bound, a range, another unit)."""

    name: str
    legend: str
    hint: str
    children: list[Field | Group] = field(default_factory=list)
    items: list[Group] | None = None
    optional_forms: bool = False
    error: str = ""
    node: str = "group"

    @property
    def id(self) -> str:
        return "g-" + self.name.replace(".", "-") if self.name else "g-case"

    def fields(self) -> list[Field]:
        out: list[Field] = []
        for child in [*self.children, *(self.items or [])]:
            out.extend([child] if isinstance(child, Field) else child.fields())
        return out

    def has_content(self) -> bool:
        return bool(self.error) or any(f.value or f.error for f in self.fields())


def _is_index(segment: str) -> bool:
    """An item index as the form writes it: ASCII digits, no leading zero (``01`` would be item 1 read
    twice)."""
    return _INDEX.fullmatch(segment) is not None


def _join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def build(flat: Mapping[str, str | list[str]], errors: Mapping[str, str] | None = None) -> Group:
    """The form of the whole case, its inputs filled from ``flat`` (``flatten`` of a case, or a
    posted form), each error shown at its field."""
    errors = errors or {}
    root = root_schema()
    group = _object_group(root, "", "Case", "", flat, errors)
    group.error = errors.get("", "")
    return group


def _object_group(
    schema: dict[str, Any],
    path: str,
    legend: str,
    hint: str,
    flat: Mapping[str, Any],
    errors: Mapping[str, str],
) -> Group:
    group = Group(path, legend, hint, error=errors.get(path, "") if path else "")
    required = schema.get("required", [])
    for key, sub in schema.get("properties", {}).items():
        group.children.append(_node(sub, _join(path, key), key, key in required, flat, errors))
    return group


def _node(
    schema: dict[str, Any],
    path: str,
    key: str,
    required: bool,
    flat: Mapping[str, Any],
    errors: Mapping[str, str],
) -> Field | Group:
    s = shape(schema, key, required)
    if not s.scalars and not s.arrays and len(s.objects) == 1:
        group = _object_group(s.objects[0], path, s.title, s.hint, flat, errors)
        return group
    if not s.scalars and not s.objects and len(s.arrays) == 1:
        return _array(s, s.arrays[0], path, flat, errors)
    if s.scalars and not s.objects and not s.arrays:
        return _scalar(s, path, flat, errors)
    # anyOf of different kinds: the plain (scalar or list) form first, the object forms beside it
    # the message for ``path`` goes on the plain input when there is one, else on the fieldset
    group = Group(path, s.title, s.hint, error="" if s.scalars else errors.get(path, ""))
    if s.scalars:
        # the fieldset's legend names it: the input is its plain value, with the type's rules as hint
        group.children.append(_scalar(replace(s, title="Value", hint=""), path, flat, errors))
    for array in s.arrays:
        group.children.append(_array(s, array, path, flat, errors, legend="Values"))
    forms = Group(path, _forms_legend(s.objects), "", optional_forms=True)
    for prop, (sub, needed) in _properties(s.objects).items():
        forms.children.append(_node(sub, _join(path, prop), prop, needed, flat, errors))
    if forms.children:
        group.children.append(forms)
    return group


_FORM_NAMES = (
    ("comparator", "a bound (e.g. < 5)"),
    ("low", "a range (low to high)"),
    ("unit", "another unit"),
)


def _forms_legend(objects: list[dict[str, Any]]) -> str:
    """What the object forms of a choice are, named from their required members."""
    found = []
    for alt in objects:
        required = alt.get("required", [])
        name = next((text for key, text in _FORM_NAMES if key in required), "another form")
        if name not in found:
            found.append(name)
    text = ", ".join(found[:-1]) + (" or " if len(found) > 1 else "") + found[-1]
    return f"Or as {text}" if found else "Other forms"


def _array(
    s: Shape,
    array: dict[str, Any],
    path: str,
    flat: Mapping[str, Any],
    errors: Mapping[str, str],
    legend: str | None = None,
) -> Field | Group:
    if _is_code_list(array):
        item = _alternatives(array["items"])[0]
        value = flat.get(path, [])
        return Field(
            path,
            s.title,
            s.hint,
            "checkboxes",
            value=value if isinstance(value, list) else [value],
            options=_options(item),
            error=errors.get(path, ""),
        )
    group = Group(path, legend or s.title, s.hint, items=[], error=errors.get(path, ""))
    items_schema = array.get("items", {})
    noun = s.title
    for i in range(item_count(flat, path)):
        item_path = _join(path, i)
        child = _node(items_schema, item_path, f"{noun} {i + 1}", False, flat, errors)
        wrapper = (
            child
            if isinstance(child, Group) and child.name == item_path
            else Group(item_path, "", "", [child])
        )
        wrapper.legend = f"{noun} {i + 1}"
        wrapper.hint = ""
        assert group.items is not None
        group.items.append(wrapper)
    return group


def item_count(flat: Mapping[str, Any], path: str) -> int:
    """1 + the highest item index a flat name gives under ``path`` (an empty item still posts its
    empty inputs, so it keeps its place)."""
    prefix = f"{path}." if path else ""
    highest = -1
    for name in flat:
        if name.startswith(prefix):
            head = name[len(prefix) :].split(".", 1)[0]
            if _is_index(head):
                highest = max(highest, int(head))
    return highest + 1


def _options(alt: dict[str, Any]) -> list[tuple[str, str]]:
    labels = alt.get("x-labels", {})
    return [(str(v), labels.get(str(v), str(v))) for v in alt.get("enum", [])]


def _scalar(s: Shape, path: str, flat: Mapping[str, Any], errors: Mapping[str, str]) -> Field:
    value = flat.get(path, "")
    out = Field(path, s.title, s.hint, "text", s.required, value, error=errors.get(path, ""))
    enums = [alt for alt in s.scalars if "enum" in alt or "const" in alt]
    typed = [alt for alt in s.scalars if alt not in enums]
    if not typed:
        out.kind = "select"
        for alt in enums:
            out.options += _options(alt) if "enum" in alt else [(str(alt["const"]), str(alt["const"]))]
        return out
    base = typed[0]
    kind = base.get("type")
    if kind == "boolean":
        out.kind = "select"
        out.options = [("yes", "Yes"), ("no", "No")]
        return out
    words = [str(alt.get("const", "")) for alt in enums if "const" in alt]
    words += [str(v) for alt in enums for v in alt.get("enum", [])]
    if kind in ("number", "integer"):
        out.kind = "number"
        out.attrs["inputmode"] = "numeric" if kind == "integer" else "decimal"
        unit = base.get("x-unit") or s.unit
        if unit and f"[{unit}]" not in out.label:
            out.label = f"{out.label} [{unit}]"
        rules = ["A whole number" if kind == "integer" else "A number"]
        if "minimum" in base:
            rules.append(f"from {base['minimum']:g}")
        if "exclusiveMinimum" in base:
            rules.append(f"above {base['exclusiveMinimum']:g}")
        if "maximum" in base:
            rules.append(f"up to {base['maximum']:g}")
        out.hint = " ".join([out.hint, " ".join(rules) + "."]).strip()
    elif base.get("pattern") == DATE_PATTERN:
        out.hint = f"{out.hint} Format: YYYY, YYYY-MM or YYYY-MM-DD.".strip()
    if "maxLength" in base:
        out.attrs["maxlength"] = str(base["maxLength"])
    if words:
        out.hint = f"{out.hint} Or: {', '.join(words)}.".strip()
    return out


# ---- case <-> flat values ------------------------------------------------------------------------


def flatten(case: Mapping[str, Any]) -> Flat:
    """The form values of a stored case: what the edit form shows."""
    out: Flat = {}
    _flatten(root_schema(), case, "", out)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return repr(value)  # 91.0 stays 91.0: the model keeps a number as given, and so does the form
    return str(value)


def _flatten(schema: dict[str, Any], value: Any, path: str, out: Flat) -> None:
    if value is None:
        return
    alts = _alternatives(schema)
    if isinstance(value, Mapping):
        props = _properties([a for a in alts if a.get("type") == "object"])
        for key, sub in value.items():
            if key in props:
                _flatten(props[key][0], sub, _join(path, key), out)
    elif isinstance(value, list):
        array = next((a for a in alts if a.get("type") == "array"), None)
        if array is None:
            return
        if _is_code_list(array):
            out[path] = [_text(v) for v in value]
        else:
            for i, item in enumerate(value):
                _flatten(array.get("items", {}), item, _join(path, i), out)
    else:
        out[path] = _text(value)


def _absent(value: Any) -> bool:
    return value is None or value == "" or value == []


def rebase(posted: Flat, opened: Flat, current: Flat) -> tuple[Flat, list[str]]:
    """The posted form moved onto the case as it is now (someone saved since it was opened): a field
    the user left as it was opened takes the current value, so saving again does not undo the other
    change; a field both changed keeps what the user typed and is returned, for the page to name.
    (Outside review: the stale form, saved again, silently put back what the other person changed.)"""
    out: Flat = {}
    both: list[str] = []
    for name in sorted((set(posted) | set(opened) | set(current)) - CONTROLS):
        mine, was, now = posted.get(name), opened.get(name), current.get(name)
        same = (_absent(mine) and _absent(was)) or mine == was
        value = now if same else mine
        if not same and not ((_absent(now) and _absent(was)) or now == was) and mine != now:
            both.append(name)
        if value is not None and not _absent(value):
            out[name] = value
    return out, both


@dataclass
class Parsed:
    case: dict[str, Any]
    errors: dict[str, str]
    """Field name -> message, for values that are not even of the field's type."""
    renames: dict[str, str]
    """Element path of a kept array item (``surgery.0``) -> its field name (``surgery.1``): an empty
    item before it was left out, so the case's indexes differ from the form's."""


def parse(form: Mapping[str, str | list[str]]) -> Parsed:
    """The case dict a posted form describes; 400 for a field name the schema does not have."""
    check_names(form)
    errors: dict[str, str] = {}
    renames: dict[str, str] = {}
    value = _parse_object(root_schema(), "", "", form, errors, renames)
    return Parsed({} if value is ABSENT else value, errors, renames)


def check_names(form: Mapping[str, Any]) -> None:
    unknown = sorted(name for name in form if name not in CONTROLS and not resolves(name))
    if unknown:
        shown = ", ".join(unknown[:5])
        raise BadRequest([Issue("invalid", f"the form has fields the case does not: {shown}", unknown[0])])


def resolves(name: str) -> bool:
    """Whether ``name`` is an element path of the case schema (array indexes below MAX_ITEMS)."""
    return _resolves(root_schema(), name.split(".")) if name else False


def _resolves(schema: dict[str, Any], segments: list[str]) -> bool:
    for alt in _alternatives(schema):
        kind = alt.get("type")
        if not segments:
            if kind != "object" and (kind != "array" or _is_code_list(alt)):
                return True
        elif kind == "object" and segments[0] in alt.get("properties", {}):
            if _resolves(alt["properties"][segments[0]], segments[1:]):
                return True
        elif (
            kind == "array"
            and _is_index(segments[0])
            and int(segments[0]) < MAX_ITEMS
            and _resolves(alt.get("items", {}), segments[1:])
        ):
            return True
    return False


def _parse(
    schema: dict[str, Any],
    path: str,
    data_path: str,
    form: Mapping[str, Any],
    errors: dict[str, str],
    renames: dict[str, str],
) -> Any:
    alts = _alternatives(schema)
    scalars = [a for a in alts if a.get("type") not in ("object", "array")]
    objects = [a for a in alts if a.get("type") == "object"]
    arrays = [a for a in alts if a.get("type") == "array"]
    found: list[Any] = []
    if scalars:
        found.append(_parse_scalar(scalars, path, form, errors))
    for array in arrays:
        found.append(_parse_array(array, path, data_path, form, errors, renames))
    if len(alts) == 1 and objects:  # a plain object: its required members are intake's to report
        found.append(_parse_object(objects[0], path, data_path, form, errors, renames))
    elif objects:  # the object forms of a choice: the form given must be complete
        found.append(_parse_forms(objects, path, data_path, form, errors, renames))
    given = [v for v in found if v is not ABSENT]
    if path in errors:
        return ABSENT  # one of its forms is wrong: no half of it is taken
    if len(given) > 1:
        errors[path] = (
            f"{path}: give one form only: a plain value, or a bound, a range or a value with its unit"
        )
        return ABSENT
    return given[0] if given else ABSENT


def _parse_forms(
    objects: list[dict[str, Any]],
    path: str,
    data_path: str,
    form: Mapping[str, Any],
    errors: dict[str, str],
    renames: dict[str, str],
) -> Any:
    merged = {"type": "object", "properties": {k: v for k, (v, _) in _properties(objects).items()}}
    value = _parse_object(merged, path, data_path, form, errors, renames)
    if value is ABSENT:
        return ABSENT
    keys = set(value)
    for alt in objects:  # the first form whose members are all given and hold everything given
        if set(alt.get("required", [])) <= keys <= set(alt.get("properties", {})):
            return value
    forms = "; ".join(" + ".join(alt.get("required", [])) for alt in objects)
    errors[path] = f"{path}: incomplete, give one of {forms}"
    return ABSENT


def _parse_object(
    schema: dict[str, Any],
    path: str,
    data_path: str,
    form: Mapping[str, Any],
    errors: dict[str, str],
    renames: dict[str, str],
) -> Any:
    out = {}
    for key, sub in schema.get("properties", {}).items():
        value = _parse(sub, _join(path, key), _join(data_path, key), form, errors, renames)
        if value is not ABSENT:
            out[key] = value
    return out if out else ABSENT


def _parse_array(
    array: dict[str, Any],
    path: str,
    data_path: str,
    form: Mapping[str, Any],
    errors: dict[str, str],
    renames: dict[str, str],
) -> Any:
    if _is_code_list(array):
        allowed = {str(v): v for v in _alternatives(array["items"])[0]["enum"]}
        raw = form.get(path, [])
        chosen = [v for v in (raw if isinstance(raw, list) else [raw]) if v != ""]
        wrong = [v for v in chosen if v not in allowed]
        if wrong:
            errors[path] = f"{path}: not one of the choices: {', '.join(wrong)}"
            return ABSENT
        return [allowed[v] for v in chosen] if chosen else ABSENT
    out: list[Any] = []
    for i in range(item_count(form, path)):
        kept = _join(data_path, len(out))
        value = _parse(array.get("items", {}), _join(path, i), kept, form, errors, renames)
        if value is not ABSENT:
            renames[kept] = _join(path, i)
            out.append(value)
    return out if out else ABSENT


def _parse_scalar(
    scalars: list[dict[str, Any]], path: str, form: Mapping[str, Any], errors: dict[str, str]
) -> Any:
    raw = form.get(path, "")
    if isinstance(raw, list):
        raw = raw[0] if raw else ""
    text = raw.strip()
    if not text:
        return ABSENT  # not recorded: never 0, false or ""
    for alt in scalars:
        for choice in alt.get("enum", []) + ([alt["const"]] if "const" in alt else []):
            if text == str(choice):
                return choice
    for alt in scalars:
        kind = alt.get("type")
        if kind == "boolean":
            answer = dict(YES_NO).get(text)
            if answer is not None:
                return answer
        elif kind == "integer" and _INT.match(text) and len(text) <= _DIGITS_MAX:
            return int(text)
        elif kind == "number":
            number = _number(text)
            if number is not None:
                return number
        elif kind == "string":
            return raw
    kinds = {alt.get("type") for alt in scalars}
    if "integer" in kinds:
        errors[path] = f"{path}: must be a whole number"
    elif "number" in kinds:
        errors[path] = f"{path}: must be a number"
    else:
        errors[path] = f"{path}: not one of the choices"
    return ABSENT


def _number(text: str) -> int | float | None:
    if len(text) > _DIGITS_MAX:
        return None  # past any number the model takes (and int() refuses 4300 digits)
    if _INT.match(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# ---- issues -> fields, add / remove --------------------------------------------------------------


def element_path(expression: str | None) -> str:
    """An issue path in the form's dotted spelling (``surgery[0].date``, ``/surgery/0/date`` ->
    ``surgery.0.date``); "" for the whole case."""
    if not expression or expression == "case":
        return ""
    path = expression.removeprefix("case.").removeprefix("#")
    path = path.strip("/").replace("/", ".") if "/" in path else _ISSUE_INDEX.sub(r".\1", path)
    return path.strip(".")


def field_of(expression: str | None, renames: Mapping[str, str]) -> str:
    """The field name an intake issue path concerns (``surgery[0].date``, ``/surgery/0/date``,
    ``case.x``), or "" when it names no field (the issue then goes in the summary only)."""
    path = element_path(expression)
    # the longest renamed prefix: the item's place in the form, not in the case
    for prefix in sorted(renames, key=len, reverse=True):
        if path == prefix or path.startswith(prefix + "."):
            path = renames[prefix] + path[len(prefix) :]
            break
    while path and not resolves(path) and not _is_group(path):
        path = path.rsplit(".", 1)[0] if "." in path else ""
    return path


def _is_group(name: str) -> bool:
    """A name a fieldset has (an object, an array or an anyOf): errors may be shown on it too."""
    schema: dict[str, Any] | None = root_schema()
    for segment in name.split("."):
        nxt = None
        for alt in _alternatives(schema or {}):
            if alt.get("type") == "object" and segment in alt.get("properties", {}):
                nxt = alt["properties"][segment]
            elif alt.get("type") == "array" and _is_index(segment):
                nxt = alt.get("items", {})
            if nxt is not None:
                break
        if nxt is None:
            return False
        schema = nxt
    return True


def add_item(flat: Flat, path: str) -> Flat:
    """The values with an empty item appended to the array at ``path`` (the "Add another" button)."""
    if not _is_group(path) or resolves(path):
        raise BadRequest([Issue("invalid", f"_add: {path[:80]} is not a list of the case", "_add")])
    index = item_count(flat, path)
    item = _join(path, index)
    if not _is_group(item) or index >= MAX_ITEMS:
        raise BadRequest([Issue("invalid", f"_add: {path[:80]} is not a list of the case", "_add")])
    return {**flat, item: ""}


def remove_item(flat: Flat, item: str) -> Flat:
    """The values without the array item ``item`` (``surgery.1``); the items after it move up."""
    parent, _, last = item.rpartition(".")
    if not _is_index(last) or not _is_group(item):
        raise BadRequest([Issue("invalid", f"_remove: {item[:80]} is not an item of a list", "_remove")])
    gone, prefix = int(last), f"{parent}." if parent else ""
    out: Flat = {}
    for name, value in flat.items():
        head, _, tail = name[len(prefix) :].partition(".") if name.startswith(prefix) else ("", "", "")
        if _is_index(head) and int(head) >= gone:
            if int(head) == gone:
                continue
            name = f"{prefix}{int(head) - 1}" + (f".{tail}" if tail else "")
        out[name] = value
    return out


def is_code_list(name: str) -> bool:
    """Whether ``name`` is a set of checkboxes (a list of codes): its value is a list even when one box
    is ticked."""
    schemas = [root_schema()]
    for segment in name.split("."):
        nxt = []
        for alt in (a for s in schemas for a in _alternatives(s)):
            if alt.get("type") == "object" and segment in alt.get("properties", {}):
                nxt.append(alt["properties"][segment])
            elif alt.get("type") == "array" and _is_index(segment):
                nxt.append(alt.get("items", {}))
        schemas = nxt
    return any(a.get("type") == "array" and _is_code_list(a) for s in schemas for a in _alternatives(s))


def labels(tree: Group) -> dict[str, str]:
    """Field name -> what the error summary calls it, with the list item it is in (``Operations 2,
    Date of the operation``); the fieldset's legend where a name has both (a choice's plain input is
    labelled just "Value")."""
    out: dict[str, str] = {}

    def walk(group: Group, prefix: str) -> None:
        for child in group.children:
            if isinstance(child, Field):
                out.setdefault(child.name, prefix + child.label)
            else:
                if not child.optional_forms:
                    out.setdefault(child.name, prefix + child.legend)
                choice = any(isinstance(c, Group) and c.optional_forms for c in child.children)
                walk(child, f"{prefix}{child.legend}, " if choice else prefix)
        for item in group.items or []:
            out[item.name] = prefix + item.legend
            walk(item, f"{prefix}{item.legend}, ")

    walk(tree, "")
    return out


def anchors(tree: Group) -> dict[str, str]:
    """Field name -> the id an error summary links to: the input when there is one, else the fieldset."""
    out: dict[str, str] = {}

    def walk(group: Group) -> None:
        out.setdefault(group.name, group.id)
        for child in [*group.children, *(group.items or [])]:
            if isinstance(child, Group):
                walk(child)

    walk(tree)
    out.update({f.name: f.id for f in tree.fields()})
    return out
