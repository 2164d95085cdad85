"""The mapping definitions of ``mappings/case-fhir.yaml``, loaded once, and the value converters.

Both directions read the same templates: ``forward`` writes each field's case value at its element
path, ``reverse`` reads it back from there. See ``mappings/README.md`` for the format.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import quote

import yaml

from service.codes import CANONICAL, MAPPINGS_DIR, systems, table

IDENTIFIER_SYSTEM = f"{CANONICAL}/identifier/element"
PROFILE_PREFIX = f"{CANONICAL}/StructureDefinition/ivclms-"
MCODE_PREFIX = "http://hl7.org/fhir/us/mcode/StructureDefinition/"


class MappingError(ValueError):
    """A case value or FHIR element the mapping cannot translate; the message names it."""


# ---- case paths -----------------------------------------------------------------------------

_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+|\*)\]")


def case_tokens(path: str) -> list[str | int]:
    """``surgery[0].renal_veins`` -> ``["surgery", 0, "renal_veins"]`` (``*`` kept as a string)."""
    return list(_tokens(path))


@functools.lru_cache(maxsize=65_536)
def _tokens(path: str) -> tuple[str | int, ...]:
    """Parsed once per path: a few hundred distinct paths recur in every case (a fresh list per call)."""
    return tuple(
        name if name else (int(index) if index != "*" else "*") for name, index in _TOKEN.findall(path)
    )


def case_path(tokens: list[str | int]) -> str:
    """The inverse of ``case_tokens`` (``*`` back to ``[*]``)."""
    text = ""
    for t in tokens:
        text += f"[{t}]" if isinstance(t, int) or t == "*" else (f".{t}" if text else t)
    return text


def case_get(case: Any, tokens: list[str | int]) -> Any:
    node = case
    for t in tokens:
        if isinstance(t, int):
            if not isinstance(node, list) or t >= len(node):
                return None
            node = node[t]
        else:
            if not isinstance(node, dict):
                return None
            node = node.get(t)
    return node


def case_set(case: dict[str, Any], tokens: list[str | int], value: Any) -> None:
    node: Any = case
    for i, t in enumerate(tokens):
        last = i == len(tokens) - 1
        nxt = None if last else tokens[i + 1]
        blank: Any = [] if isinstance(nxt, int) else {}
        if isinstance(t, int):
            while len(node) <= t:
                node.append(None)
            if last:
                node[t] = value
            elif node[t] is None:
                node[t] = blank
            node = node[t]
        else:
            if last:
                node[t] = value
            elif node.get(t) is None:
                node[t] = blank
            node = node[t]


def expand_each(case: dict[str, Any], pattern: str) -> list[list[str | int]]:
    """Concrete item paths (as tokens) of an ``each`` pattern like ``surgery[*].renal_veins[*]``."""
    paths: list[list[str | int]] = [[]]
    for t in case_tokens(pattern):
        nxt: list[list[str | int]] = []
        for p in paths:
            if t == "*":
                items = case_get(case, p)
                nxt.extend([*p, i] for i in range(len(items) if isinstance(items, list) else 0))
            else:
                nxt.append([*p, t])
        paths = nxt
    return [p for p in paths if case_get(case, p) is not None]


# ---- templates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    field: str
    values: tuple[Any, ...] = ()
    negate: bool = False
    present: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    """And these fields are empty (``absent: [...]``): a fact that holds only without another one, such
    as "dead" without a death date (Patient.deceasedBoolean)."""


@dataclass(frozen=True)
class Fixed:
    path: str
    value: Any
    when: Condition | None = None


@dataclass(frozen=True)
class Field:
    field: str
    path: str
    kind: str
    arg: str | None = None
    items: Group | None = None
    range: str | None = None
    """Where a range ``{low, high}`` of a ``quantity(unit)`` field goes (a ``...valueRange`` path)."""
    absent: str | None = None
    """Where a data-absent reason of the field's table goes instead of ``path`` (``dataAbsentReason`` of
    an Observation or its component: R4 obs-6 lets it stand only when the value is missing); for a
    ``date`` field, the primitive's ``_element`` that carries the data-absent-reason extension when the
    value is ``unknown`` (issue 15)."""
    unit_field: str | None = None
    """``quantity(@unit)``: the case field (relative to the item) holding the UCUM unit, when the unit
    is data (a lab result's) rather than fixed by the mapping."""
    comparator: str | None = None
    """Where the comparator of a bound ``{comparator, value}`` on a codeable(table) grade goes (a project
    extension's ``valueCode``: CodeableConcept has no comparator); the grade itself goes to ``path``."""


@dataclass(frozen=True)
class Group:
    fixed: tuple[Fixed, ...] = ()
    fields: tuple[Field, ...] = ()


@dataclass(frozen=True)
class Ref:
    path: str
    to: str


@dataclass(frozen=True)
class Template:
    name: str
    resource_type: str
    each: tuple[str, ...]
    suffix: str
    when: Condition | None
    group: Group
    refs: tuple[Ref, ...] = field(default=())
    title: str = ""
    description: str = ""
    mcode: str | None = None

    @property
    def profile(self) -> str:
        return PROFILE_PREFIX + self.name


@dataclass(frozen=True)
class Spec:
    version: str
    templates: tuple[Template, ...]
    codes: dict[str, dict[str, Any]]
    maps: dict[str, dict[str, Any]]
    not_yet_mapped: tuple[str, ...]
    retraction: dict[str, dict[str, Any]] = field(default_factory=dict)

    def by_profile(self, profile: str) -> Template | None:
        return next((t for t in self.templates if t.profile == profile), None)


_SYSTEM_IN_SELECTOR = re.compile(r"\((?P<alias>[A-Z][A-Z0-9]*)\|")
_EXT_IN_SELECTOR = re.compile(r"\((?P<kind>ext|mcode):(?P<name>[^()]+)\)")


def expand_path(path: str, aliases: dict[str, str]) -> str:
    """Shorthands in element paths: ``(LNC|code)``, ``extension(ext:name)``, ``extension(mcode:name)``."""

    def system(m: re.Match[str]) -> str:
        alias = m.group("alias")
        if alias not in aliases:
            raise MappingError(f"unknown code system alias {alias!r} in path {path!r}")
        return f"({aliases[alias]}|"

    def ext(m: re.Match[str]) -> str:
        prefix = PROFILE_PREFIX if m.group("kind") == "ext" else MCODE_PREFIX
        return f"({prefix}{m.group('name')})"

    return _EXT_IN_SELECTOR.sub(ext, _SYSTEM_IN_SELECTOR.sub(system, path))


_KIND = re.compile(r"^(?P<kind>[a-z-]+)(?:\((?P<arg>[^()]*)\))?$")


def _condition(raw: Any) -> Condition | None:
    if raw is None:
        return None
    if "present" in raw:
        return Condition("", present=tuple(raw["present"]))
    absent = tuple(raw.get("absent", ()))
    if "in" in raw:
        return Condition(raw["field"], tuple(raw["in"]), absent=absent)
    return Condition(raw["field"], tuple(raw["not_in"]), negate=True, absent=absent)


def _group(raw: dict[str, Any], aliases: dict[str, str]) -> Group:
    fixed = tuple(
        Fixed(expand_path(f["path"], aliases), f["value"], _condition(f.get("when")))
        for f in raw.get("fixed", [])
    )
    fields: list[Field] = []
    for f in raw.get("fields", []):
        path = expand_path(f["path"], aliases)
        if "items" in f:
            fields.append(Field(f["field"], path, "items", None, _group(f["items"], aliases)))
            continue
        m = _KIND.match(f["as"])
        if not m or m.group("kind") not in CONVERTERS:
            raise MappingError(f"unknown converter {f['as']!r} for field {f['field']!r}")
        absent = expand_path(f["absent"], aliases) if "absent" in f else None
        if absent is not None and m.group("kind") not in ("codeable", "date"):
            raise MappingError(f"field {f['field']!r}: `absent:` needs a codeable(table) or date field")
        span = expand_path(f["range"], aliases) if "range" in f else None
        if span is not None and m.group("kind") != "quantity":
            raise MappingError(f"field {f['field']!r}: `range:` needs a quantity(unit) field")
        comparator = expand_path(f["comparator"], aliases) if "comparator" in f else None
        if comparator is not None and m.group("kind") != "codeable":
            raise MappingError(f"field {f['field']!r}: `comparator:` needs a codeable(table) field")
        arg = m.group("arg")
        unit_field = arg[1:] if m.group("kind") == "quantity" and arg and arg.startswith("@") else None
        fields.append(
            Field(
                f["field"],
                path,
                m.group("kind"),
                arg,
                range=span,
                absent=absent,
                comparator=comparator,
                unit_field=unit_field,
            )
        )
    return Group(fixed, tuple(fields))


def load(text: str) -> Spec:
    raw = yaml.safe_load(text)
    aliases = {**systems(), **raw.get("systems", {})}
    templates = []
    for t in raw["resources"]:
        each = t.get("each", t.get("item", ""))
        templates.append(
            Template(
                name=t["name"],
                resource_type=t["resourceType"],
                each=tuple(each) if isinstance(each, list) else (each,),
                suffix=t.get("suffix", ""),
                when=_condition(t.get("when")),
                group=_group(t, aliases),
                refs=tuple(Ref(expand_path(r["path"], aliases), r["to"]) for r in t.get("refs", [])),
                title=t.get("title", t["name"]),
                description=t.get("description", ""),
                mcode=t.get("mcode"),
            )
        )
    names = [t.name for t in templates]
    if len(set(names)) != len(names):
        raise MappingError("template names must be unique")
    codes = {name: {**c, "system": aliases[c["system"]]} for name, c in (raw.get("codes") or {}).items()}
    return Spec(
        version=str(raw["version"]),
        templates=tuple(templates),
        codes=codes,
        maps=raw.get("maps") or {},
        not_yet_mapped=tuple(raw.get("not_yet_mapped") or ()),
        retraction=raw.get("retraction") or {},
    )


@cache
def spec() -> Spec:
    return load((MAPPINGS_DIR / "case-fhir.yaml").read_text())


# ---- identifiers --------------------------------------------------------------------------------


def identifier_value(case: dict[str, Any], key: str) -> str:
    return f"{case['source_system']}|{case['case_id']}|{key}"


_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes + (IDENTIFIER_SYSTEM + "|").encode()


def full_url(value: str) -> str:
    """``urn:uuid:`` + ``uuid.uuid5(NAMESPACE_URL, IDENTIFIER_SYSTEM + "|" + value)``, formatted from the
    SHA-1 digest directly (one per resource of every Bundle; ``uuid.UUID`` costs more than the hash):
    RFC 4122 4.3, the version nibble set to 5 and the variant bits to 10."""
    digest = hashlib.sha1(_URL_NAMESPACE + value.encode(), usedforsecurity=False).hexdigest()
    variant = "89ab"[int(digest[16], 16) & 3]
    return f"urn:uuid:{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-{variant}{digest[17:20]}-{digest[20:32]}"


def conditional_url(resource_type: str, value: str) -> str:
    return f"{resource_type}?identifier={quote(IDENTIFIER_SYSTEM, safe='')}%7C{quote(value, safe='')}"


def split_identifier(value: str) -> tuple[str, str, str]:
    """``source|case|key`` -> its three parts (the source is a URI, the key has no ``|``)."""
    source, _, rest = value.partition("|")
    case_id, _, key = rest.rpartition("|")
    if not source or not key:
        raise MappingError(f"business identifier {value!r} is not <source>|<case>|<key>")
    return source, case_id, key


# ---- fixed values -------------------------------------------------------------------------------


def fixed_value(value: Any) -> Any:
    """A fixed value: ``{concept: name}`` / ``{coding: name}`` from the ``codes:`` section,
    ``{codeable: table/key}`` from codes.yaml, ``{system: ALIAS}``; anything else is literal."""
    if isinstance(value, list):
        return [fixed_value(v) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        ((kind, arg),) = value.items()
        if kind == "concept":
            return concept(arg)
        if kind == "coding":
            return coding(arg)
        if kind == "codeable":
            name, _, key = str(arg).partition("/")
            return codeable(name, key)
        if kind == "system":
            aliases = systems()
            if arg not in aliases:
                raise MappingError(f"unknown code system alias {arg!r}")
            return aliases[arg]
    if isinstance(value, dict):
        return {k: fixed_value(v) for k, v in value.items()}
    return value


def coding(name: str) -> dict[str, Any]:
    codes = spec().codes
    if name not in codes:
        raise MappingError(f"code {name!r} is not in the codes: section of case-fhir.yaml")
    c = codes[name]
    return {"system": c["system"], "code": str(c["code"]), "display": c["display"]}


def concept(name: str) -> dict[str, Any]:
    return {"coding": [coding(name)], "text": spec().codes[name]["display"]}


# ---- converters -----------------------------------------------------------------------------------

Forward = Callable[[Any, str | None, "Context"], Any]
Reverse = Callable[[Any, str | None, "Context"], Any]


@dataclass
class Context:
    """What converters need beyond the value: fullUrls by element key, and back."""

    urls: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


def _table_key(name: str, value: Any) -> str:
    t = table(name)
    key = str(value)
    if key not in t.values and not t.is_absent(key):
        raise MappingError(f"value {value!r} is not in code table {name!r}")
    return key


def _from_key(name: str, key: str) -> Any:
    return int(key) if key.isdigit() and all(k.isdigit() for k in table(name).values) else key


def codeable(name: str, value: Any) -> dict[str, Any]:
    return table(name).codeable(_table_key(name, value))


def _codeable_back(value: Any, name: str | None, _: Context) -> Any:
    assert name
    key = table(name).key_of(value)
    if key is None:
        raise MappingError(f"no value of code table {name!r} matches {value!r}")
    return _from_key(name, key)


def _coding(value: Any, name: str | None, _: Context) -> Any:
    assert name
    codings: list[dict[str, Any]] = codeable(name, value)["coding"]
    return codings[0]


def _coding_back(value: Any, name: str | None, ctx: Context) -> Any:
    return _codeable_back({"coding": [value]}, name, ctx)


def _code(value: Any, name: str | None, _: Context) -> Any:
    assert name
    return _table_key(name, value)


def _code_back(value: Any, name: str | None, _: Context) -> Any:
    assert name
    return _from_key(name, _table_key(name, value))


def _map(value: Any, name: str | None, _: Context) -> Any:
    assert name
    m = spec().maps[name]
    key = "null" if value is None else str(value)
    if key == "null" and key not in m:
        return None
    if key not in m:
        raise MappingError(f"value {value!r} is not in map {name!r}")
    return fixed_value(m[key])


def _map_back(value: Any, name: str | None, _: Context) -> Any:
    assert name
    for key, target in spec().maps[name].items():
        if fixed_value(target) == value:
            return None if key == "null" else key
    raise MappingError(f"no value of map {name!r} matches {value!r}")


def _quantity(value: Any, unit: str | None, _: Context) -> Any:
    """A number -> Quantity; a bound ``{comparator, value}`` -> Quantity.comparator (a range is written
    by the field's ``range:`` path, see forward.py)."""
    assert unit
    if isinstance(value, dict):
        if "comparator" not in value:
            raise MappingError(f"value {value!r} is a range: the field has no `range:` element")
        return {"value": value["value"], "comparator": value["comparator"], **_ucum(unit)}
    return {"value": value, **_ucum(unit)}


def _ucum(unit: str) -> dict[str, str]:
    return {"unit": unit, "system": systems()["UCUM"], "code": unit}


def _quantity_back(value: Any, unit: str | None, _: Context) -> Any:
    if value.get("code") != unit:
        raise MappingError(f"quantity unit {value.get('code')!r} is not {unit!r}")
    if "comparator" in value:
        return {"comparator": value["comparator"], "value": value.get("value")}
    return value.get("value")


def quantity_system(quantity: dict[str, Any]) -> str | None:
    """The quantity's system when it is UCUM, else None."""
    found = quantity.get("system")
    return str(found) if found == systems()["UCUM"] else None


def quantity_range(value: dict[str, Any], unit: str) -> dict[str, Any]:
    """``{low, high}`` -> FHIR Range (SimpleQuantity ends, same UCUM unit)."""
    return {"low": {"value": value["low"], **_ucum(unit)}, "high": {"value": value["high"], **_ucum(unit)}}


def quantity_range_back(value: dict[str, Any], unit: str) -> dict[str, Any]:
    ends = {}
    for end in ("low", "high"):
        q = value.get(end) or {}
        if q.get("code") != unit or "value" not in q:
            raise MappingError(f"Range.{end} must be a value in {unit!r}")
        ends[end] = q["value"]
    return ends


def _reference(value: Any, _: str | None, ctx: Context) -> Any:
    if value not in ctx.urls:
        raise MappingError(f"reference to {value!r}: no resource has that element key")
    return {"reference": ctx.urls[value]}


def _reference_back(value: Any, _: str | None, ctx: Context) -> Any:
    ref = value.get("reference")
    if ref not in ctx.keys:
        raise MappingError(f"reference {ref!r} does not resolve inside the bundle")
    return ctx.keys[ref]


def _same(value: Any, _: str | None, __: Context) -> Any:
    return value


def _typed(kind: type | tuple[type, ...]) -> tuple[Forward, Reverse]:
    def check(value: Any, _: str | None, __: Context) -> Any:
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise MappingError(f"value {value!r} is not a {kind}")
        return value

    return check, _same


CONVERTERS: dict[str, tuple[Forward, Reverse]] = {
    "string": _typed(str),
    "date": _typed(str),
    "boolean": _typed(bool),
    "integer": _typed(int),
    "decimal": _typed((int, float)),
    "code": (_code, _code_back),
    "coding": (_coding, _coding_back),
    "codeable": (lambda v, n, c: codeable(n or "", v), _codeable_back),
    "map": (_map, _map_back),
    "quantity": (_quantity, _quantity_back),
    "reference": (_reference, _reference_back),
}
