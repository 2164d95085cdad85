"""De-identification of a canonical case for registry extracts.

Rules (each derived from the schema, so a field added later is handled by its type):

- **Keys per recipient**: pseudonyms are keyed with ``recipient_key(master, recipient)``, an HMAC of
  the recipient (the OAuth client) under the operator's master key, so two recipients' pseudonyms
  cannot be linked and one recipient gets the same pseudonyms in every pull.
- **Direct identifiers** are removed: ``patient.identifier`` (system and value) and
  ``patient.birth_date``. ``case_id`` is replaced by a stable pseudonym: the first 32 hex digits of
  HMAC-SHA256(key, ``source_system|case_id``); without the key it cannot be traced back to the case
  id. ``source_system`` (it names the hospital) is replaced by ``src-`` and 16 hex digits of
  HMAC-SHA256(key, ``source-system|`` + source system): the same per recipient for every case of one
  hospital, without naming it.
- **Dates** become intervals: every date field ``x`` is replaced by ``x_days``, the whole number of days
  from ``diagnosis.date`` (negative before it); ``diagnosis.date`` itself (day 0) is replaced by its
  year (``diagnosis.year``), the only absolute time left (HIPAA Safe Harbor keeps years).
- **Ages** over 89 become the string ``"90+"``.
- **Free text** is removed: every text field that is not a code (``FREE_TEXT``). Kept as structured
  text: laboratory ``unit`` (UCUM) and care plan ``performed`` (``surgery[i]`` / ``therapies[i]``).
  ``institution`` and ``reference`` are free text and go.
- **Incremental pulls** pass ``since`` as a cursor the service signed (``cursor``), never a chosen
  instant: bisecting ``since`` would tell when each pseudonym's record changed.

The result is no longer a valid case (it has no identifier) and is not meant to be imported.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

from marshmallow import Schema, fields

from service.model import dates
from service.model import fields as f
from service.model.schema import ActivitySchema, CaseSchema, LabResultSchema

DAYS_SUFFIX = "_days"
AGE_CAP = 89
"""Ages above this are grouped."""
AGE_GROUP = "90+"
REMOVED: frozenset[str] = frozenset({"patient.identifier", "patient.birth_date", "diagnosis.date"})
"""Dotted schema paths (list indices left out) removed outright."""
PSEUDONYMISED = "case_id"
SOURCE_PSEUDONYMISED = "source_system"
SOURCE_PREFIX = "src-"
YEAR_OF = "diagnosis.date"
"""The one date whose year is kept (as ``YEAR``, a sibling of the date field)."""
YEAR = "year"
KEY_VERSION = "ivclms-pseudonym-v1"
"""Domain of the per-recipient key derivation; a new version gives every recipient new pseudonyms."""
CURSOR_SEPARATOR = "~"
AGES: frozenset[str] = frozenset({"patient.age_at_diagnosis"})
_STRUCTURED_TEXT: frozenset[tuple[type[Schema], str]] = frozenset(
    {(LabResultSchema, "unit"), (ActivitySchema, "performed"), (CaseSchema, "case_id")}
)


def _nested(field: fields.Nested) -> Schema:
    schema = field.schema
    assert isinstance(schema, Schema)
    return schema


def _walk(schema: Schema, prefix: str) -> Iterator[tuple[str, Schema, str, fields.Field[Any]]]:
    """(dotted path, owning schema, name, field) of every field, depth first, in schema order."""
    for name, field in schema.fields.items():
        path = f"{prefix}{name}"
        yield path, schema, name, field
        if isinstance(field, fields.Nested):
            yield from _walk(_nested(field), f"{path}.")
        elif isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
            yield from _walk(_nested(field.inner), f"{path}.")


@cache
def free_text_paths() -> tuple[str, ...]:
    """Dotted paths of every free-text field (type Text, not a URI, not structured text)."""
    return tuple(
        path
        for path, schema, name, field in _walk(CaseSchema(), "")
        if type(field) is f.Text and (type(schema), name) not in _STRUCTURED_TEXT
    )


@cache
def date_paths() -> tuple[str, ...]:
    """Dotted paths of every date field."""
    return tuple(path for path, _s, _n, field in _walk(CaseSchema(), "") if isinstance(field, f.Date))


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def recipient_key(master: bytes, recipient: str) -> bytes:
    """The pseudonym key of one recipient: HMAC-SHA256(master, ``ivclms-pseudonym-v1|<recipient>``)."""
    if not master or not recipient:
        raise ValueError("a master key and a recipient are required")
    return hmac.new(master, f"{KEY_VERSION}|{recipient}".encode(), hashlib.sha256).digest()


def pseudonym(source_system: str, case_id: str, key: bytes) -> str:
    return _mac(key, f"{source_system}|{case_id}")[:32]


def source_pseudonym(source_system: str, key: bytes) -> str:
    """An opaque token for a source system (hospital): stable per recipient, unlinkable across them."""
    return SOURCE_PREFIX + _mac(key, f"source-system|{source_system}")[:16]


def cursor(as_of: str, key: bytes) -> str:
    """The ``since`` a recipient may pass back: the instant and its MAC under the recipient's key."""
    return f"{as_of}{CURSOR_SEPARATOR}{_mac(key, f'since|{as_of}')[:32]}"


def cursor_instant(value: str, key: bytes) -> str | None:
    """The instant of a cursor this service signed for this key; None for anything else."""
    as_of, separator, _ = value.rpartition(CURSOR_SEPARATOR)
    if not separator or not as_of:
        return None
    return as_of if hmac.compare_digest(cursor(as_of, key), value) else None


def age(value: Any) -> Any:
    """An age in years, or ``"90+"`` above 89."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > AGE_CAP:
        return AGE_GROUP
    return value


def deidentify(case: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """The de-identified copy of a canonical case (the input is not changed)."""
    if not key:
        raise ValueError("a pseudonym key is required for de-identification")
    known = dates.known(case["diagnosis"]["date"])  # ``unknown`` (issue 15): no origin, no offsets
    origin = None if known is None else dates.parse(known)
    out = _copy(CaseSchema(), case, "", origin, frozenset(free_text_paths()))
    out[PSEUDONYMISED] = pseudonym(case["source_system"], case["case_id"], key)
    out[SOURCE_PSEUDONYMISED] = source_pseudonym(case["source_system"], key)
    return out


def _offset(value: str | None, origin: dates.PartialDate | None) -> int | None:
    """Days from diagnosis, only when both are full dates: a year or month date has no day offset, so
    it is left unknown rather than given a day it does not have (so is an ``unknown`` date)."""
    day = dates.exact(value)
    return None if day is None or origin is None or origin.exact is None else (day - origin.exact).days


def _copy(
    schema: Schema,
    data: Mapping[str, Any],
    prefix: str,
    origin: dates.PartialDate | None,
    free_text: frozenset[str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in schema.fields.items():
        path = f"{prefix}{name}"
        if path == YEAR_OF:
            out[YEAR] = None if origin is None else origin.year
        if path in REMOVED or path in free_text or name not in data:
            continue
        value = data[name]
        if isinstance(field, f.Date):
            out[name + DAYS_SUFFIX] = _offset(value, origin)
        elif isinstance(field, fields.Nested) and isinstance(value, Mapping):
            out[name] = _copy(_nested(field), value, f"{path}.", origin, free_text)
        elif isinstance(field, fields.List) and isinstance(field.inner, fields.Nested):
            inner = _nested(field.inner)
            out[name] = [_copy(inner, entry, f"{path}.", origin, free_text) for entry in value or []]
        elif path in AGES:
            out[name] = age(value)
        else:
            out[name] = value
    return out
