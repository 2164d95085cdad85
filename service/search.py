"""FHIR search over the read-side index: parameters parsed, checked and turned into one SQL query.

What is searchable is declared once here (``SEARCH_PARAMS``); the CapabilityStatement is built from
the same declaration, so it lists exactly what works. Reference parameters are the links the
mapping's templates write (``subject``, ``focus``, ``part-of``, ...), read off
``mappings/case-fhir.yaml``.

Paging is by keyset on (lastUpdated, id): a resource written while a client pages moves to the
end of the order, so it can appear again (newer version) but no resource is ever skipped.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Select, and_, exists, false, func, not_, or_, select, true, tuple_

from service.errors import BadRequest, Issue
from service.mapping.spec import spec
from service.model import dates
from service.store.tables import cases, resource_links, resources

RESOURCE_TYPES = (
    "Patient",
    "Condition",
    "Observation",
    "Procedure",
    "MedicationStatement",
    "CarePlan",
    "Device",
)
"""Types the mapping writes and the read side serves (Provenance is read by id through ``target``)."""
READ_TYPES = (*RESOURCE_TYPES, "Provenance")
COUNT_DEFAULT = 50
COUNT_MAX = 500
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")
CONTROL = frozenset({"_count", "_summary", "_include", "_revinclude", "_cursor", "_format"})
_NAME = re.compile(r"[A-Z][a-z]*|[a-z]+")


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # token | reference | date | uri | string
    documentation: str


COMMON = (
    Param("_id", "token", "Logical id"),
    Param("_lastUpdated", "date", "When the service stored this version (eq, gt, ge, lt, le)"),
    Param("_profile", "uri", "A profile the resource claims"),
    Param("identifier", "token", "Any identifier: system|value or value"),
)


def _kebab(element: str) -> str:
    return "-".join(w.lower() for w in _NAME.findall(element))


@cache
def reference_params() -> dict[str, tuple[str, ...]]:
    """Resource type -> reference search parameters, from the elements the templates link through."""
    found: dict[str, set[str]] = {t: set() for t in READ_TYPES}
    for template in spec().templates:
        for ref in template.refs:
            element = re.sub(r"\[[^\]]*\]", "", ref.path).split(".")[-1]
            found[template.resource_type].add(_kebab(element))
        for group_field in template.group.fields:
            if group_field.kind == "reference":
                element = re.sub(r"\[[^\]]*\]", "", group_field.path).split(".")[-1]
                found[template.resource_type].add(_kebab(element))
    found["Provenance"].add("target")
    for resource_type in RESOURCE_TYPES:
        if resource_type != "Patient":
            found[resource_type].add("patient")  # any link to the Patient (subject, patient)
    return {t: tuple(sorted(p)) for t, p in found.items()}


@cache
def search_params() -> dict[str, tuple[Param, ...]]:
    """Every search parameter of every type, as the CapabilityStatement lists it."""
    out: dict[str, tuple[Param, ...]] = {}
    for resource_type in READ_TYPES:
        params = list(COMMON)
        if resource_type not in ("Patient", "Provenance"):
            params.append(Param("code", "token", "What the resource is: system|code, code or |code"))
        params.append(Param("date", "date", "The clinical date (day precision; eq, gt, ge, lt, le)"))
        params += [Param(p, "reference", f"Linked through {p}") for p in reference_params()[resource_type]]
        out[resource_type] = tuple(params)
    return out


Restriction = tuple[tuple[str, str], ...]
"""One SMART v2 ``?`` restriction: every (token or reference parameter, value) must match."""


@dataclass(frozen=True)
class Visibility:
    """What of one resource type a caller may get, as query filters: a resource must meet one
    restriction of each set in ``restrictions`` (sets are ANDed, e.g. the ``s`` and the ``r`` grant)
    and belong to a case of ``sources`` (None: every source system)."""

    restrictions: tuple[tuple[Restriction, ...], ...] = ()
    sources: frozenset[str] | None = None

    @property
    def unlimited(self) -> bool:
        return not self.restrictions and self.sources is None

    def as_json(self) -> dict[str, Any]:
        return {
            "restrictions": [[[list(p) for p in r] for r in one] for one in self.restrictions],
            "sources": None if self.sources is None else sorted(self.sources),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Visibility:
        restrictions = tuple(
            tuple(tuple((str(n), str(v)) for n, v in r) for r in one) for one in data["restrictions"]
        )
        sources = data["sources"]
        return cls(restrictions, None if sources is None else frozenset(str(s) for s in sources))


def restriction_condition(resource_type: str, restrictions: Sequence[Restriction]) -> Any:
    """Resources meeting one of ``restrictions``: the same token/reference rows ``search`` matches
    (and the gate's ``matches`` reads off a resource)."""
    kinds = {p.name: p.type for p in search_params()[resource_type]}
    options = []
    for restriction in restrictions:
        parts = []
        for name, value in restriction:
            build = _token if kinds.get(name) == "token" else _reference
            parts.append(build(resource_type, name, value))
        options.append(and_(*parts) if parts else true())
    return or_(*options) if options else false()


def source_condition(sources: frozenset[str]) -> Any:
    """Resources of cases from these source systems (hospitals)."""
    if not sources:
        return false()
    return resources.c.case_ref.in_(select(cases.c.id).where(cases.c.source_system.in_(sorted(sources))))


def limit_conditions(resource_type: str, limits: Visibility) -> list[Any]:
    out = [restriction_condition(resource_type, one) for one in limits.restrictions]
    if limits.sources is not None:
        out.append(source_condition(limits.sources))
    return out


@dataclass
class Search:
    """A parsed search: filters to apply, page, includes, and the parameters that were ignored."""

    resource_type: str
    conditions: list[Any] = field(default_factory=list)
    count: int = COUNT_DEFAULT
    summary_count: bool = False
    include: list[tuple[str, str, str | None]] = field(default_factory=list)
    revinclude: list[tuple[str, str]] = field(default_factory=list)
    after: tuple[datetime, str] | None = None
    before: tuple[datetime, str] | None = None
    ignored: list[str] = field(default_factory=list)
    used: list[tuple[str, str]] = field(default_factory=list)
    """The parameters applied, for the self link."""

    def limit(self, limits: Visibility) -> None:
        """Apply the caller's grant as conditions of the query itself: totals and pages stay exact."""
        self.conditions += limit_conditions(self.resource_type, limits)


def _bad(name: str, message: str) -> BadRequest:
    return BadRequest([Issue("invalid", f"{name}: {message}", name)])


_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
"""A calendar day, ASCII digits only (``\\d`` also matches other scripts' digits)."""
_ISO_TEXT = re.compile(r"[0-9T:.+\-Z]+")
_YEAR_MONTH = re.compile(r"[0-9]{4}(-[0-9]{2})?")


def _prefix(value: str) -> tuple[str, str]:
    if value[:2] in PREFIXES and value[2:3] in tuple("0123456789"):
        return value[:2], value[2:]
    return "eq", value


def parse_instant(name: str, value: str) -> tuple[datetime, datetime]:
    """The interval a FHIR date/dateTime value covers, in UTC (a day, or an instant); a day or time
    that does not exist (``2021-02-30``), or one at the ends of the calendar that cannot be turned to
    UTC or followed by the next instant, is a 400."""
    try:
        if not _ISO_TEXT.fullmatch(value):
            raise ValueError(value)
        if _YEAR_MONTH.fullmatch(value):  # R4 search.html: a value covers the range its precision says
            year, month = int(value[:4]), int(value[5:7]) if len(value) == 7 else 1
            start = datetime(year, month, 1, tzinfo=UTC)
            if len(value) == 4:
                return start, datetime(year + 1, 1, 1, tzinfo=UTC)
            return start, datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        if _DAY.fullmatch(value):
            start = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return start, start + timedelta(days=1)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise _bad(name, f"{value!r} needs a time zone")
        moment = moment.astimezone(UTC)
        return moment, moment + timedelta(microseconds=1)
    except (ValueError, OverflowError):
        raise _bad(
            name, f"{value!r} is not a date (YYYY, YYYY-MM or YYYY-MM-DD) or an instant with a zone"
        ) from None


def _compare(column: Any, prefix: str, low: Any, high: Any) -> Any:
    return {
        "eq": and_(column >= low, column < high),
        "ne": or_(column < low, column >= high),
        "gt": column >= high,
        "ge": column >= low,
        "lt": column < low,
        "le": column < high,
    }[prefix]


def _link_exists(resource_type: str, param: str, system: str | None, value: str) -> Any:
    query = exists().where(
        resource_links.c.resource_type == resource_type,
        resource_links.c.id == resources.c.id,
        resource_links.c.param == param,
        resource_links.c.value == value,
    )
    if system is not None:
        query = query.where(resource_links.c.system == system)
    return query


def _token(resource_type: str, param: str, raw: str) -> Any:
    options = []
    for item in raw.split(","):
        # The first bar ends the system (a URI has none); a business identifier's value has its own.
        system, bar, code = item.partition("|") if "|" in item else ("", "", item)
        if not code:
            raise _bad(param, f"{raw!r}: a token is system|code, code or |code")
        options.append(_link_exists(resource_type, param, system if bar else None, code))
    return or_(*options)


def _reference(resource_type: str, param: str, raw: str) -> Any:
    options = []
    for item in raw.split(","):
        target_type, slash, target_id = item.rpartition("/")
        if not target_id or (slash and target_type not in READ_TYPES):
            raise _bad(param, f"{item!r}: a reference is Type/id or id")
        options.append(_link_exists(resource_type, param, target_type or None, target_id))
    return or_(*options)


def decode_cursor(raw: str) -> tuple[str, tuple[datetime, str]]:
    try:
        direction, stamp, rid = base64.urlsafe_b64decode(raw.encode()).decode().split("|", 2)
        if direction not in ("next", "prev"):
            raise ValueError(direction)
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            raise ValueError(stamp)
        return direction, (moment.astimezone(UTC), rid)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise _bad("_cursor", "not a page this service gave out") from None


def encode_cursor(direction: str, key: tuple[datetime, str]) -> str:
    return base64.urlsafe_b64encode(f"{direction}|{key[0].isoformat()}|{key[1]}".encode()).decode()


def parse(resource_type: str, params: Sequence[tuple[str, str]], *, strict: bool) -> Search:
    """Check and translate the query; unknown parameters are ignored (lenient) or a 400 (strict)."""
    known = {p.name: p for p in search_params()[resource_type]}
    search = Search(resource_type)
    for name, value in params:
        base = name.split(":", 1)[0]
        if name == "_count":
            # ASCII digits only: "²".isdigit() is true and int("²") raises.
            if (
                not (value.isascii() and value.isdigit() and len(value) <= 4)
                or not 0 <= int(value) <= COUNT_MAX
            ):
                raise _bad(name, f"must be a whole number from 0 to {COUNT_MAX}")
            search.count = int(value)
        elif name == "_summary":
            if value != "count":
                raise _bad(name, "only _summary=count is supported")
            search.summary_count = True
        elif name == "_cursor":
            direction, key = decode_cursor(value)
            if direction == "next":
                search.after = key
            else:
                search.before = key
            continue
        elif name == "_format":
            continue
        elif name in ("_include", "_revinclude"):
            parts = value.split(":")
            if len(parts) not in (2, 3) or parts[0] not in READ_TYPES:
                raise _bad(name, f"{value!r}: expected Type:param")
            if parts[1] not in reference_params()[parts[0]]:
                raise _bad(name, f"{value!r}: {parts[0]} has no reference parameter {parts[1]!r}")
            if name == "_include":
                search.include.append((parts[0], parts[1], parts[2] if len(parts) == 3 else None))
            else:
                search.revinclude.append((parts[0], parts[1]))
        elif base in known and base == name:
            search.conditions.append(_condition(resource_type, known[base], value))
        else:
            if strict:
                raise _bad(name, f"unknown or unsupported search parameter for {resource_type}")
            search.ignored.append(name)
            continue
        search.used.append((name, value))
    if search.count == 0:
        search.summary_count = True  # the total and no entries, as HAPI answers (fhirpy's count())
    return search


def _condition(resource_type: str, param: Param, value: str) -> Any:
    name = param.name
    if not value:
        raise _bad(name, "an empty value")
    if name == "_id":
        return resources.c.id.in_(value.split(","))
    if name == "_profile":
        return resources.c.profile.in_(value.split(","))
    if name == "_lastUpdated":
        prefix, rest = _prefix(value)
        low, high = parse_instant(name, rest)
        return _compare(resources.c.last_updated, prefix, low, high)
    if name == "date":
        prefix, rest = _prefix(value)
        return _date_condition(name, prefix, rest, value)
    if param.type == "token":
        return _token(resource_type, name, value)
    return _reference(resource_type, name, value)


def _date_bounds(name: str, rest: str, value: str) -> tuple[str, str]:
    """First and last day (``YYYY-MM-DD`` text; a month's last day is written ``-31``, which sorts
    right whatever the month's length) of a search value ``YYYY``, ``YYYY-MM`` or
    ``YYYY-MM-DD[Thh:mm..]``."""
    try:
        if _YEAR_MONTH.fullmatch(rest):
            dates.parse(rest)  # 2020-13 is no month
            return rest + "-01-01"[len(rest) - 4 :], rest + "-12-31"[len(rest) - 4 :]
        day = rest[:10]
        if not _DAY.fullmatch(day):
            raise ValueError(day)
        date.fromisoformat(day)  # 2021-02-30 and 2020-13-45 are no days
        if len(rest) > 10 and not (rest.isascii() and rest[10] == "T"):
            raise ValueError(rest)
        if len(rest) > 10:  # a time is checked (25:00 is none), then searched at day precision
            datetime.fromisoformat(rest.replace("Z", "+00:00"))
        # a month's last day is its "-31" (as a stored month's last day is written): 2021-04-30 and
        # 2021-04-31 bound the same days, so gt2021-04-30 does not match a stored 2021-04
        last = dates.parse(day[:7]).latest.isoformat()
        return day, day[:8] + "31" if day == last else day
    except ValueError:
        raise _bad(name, f"{value!r} is not a date like ge2020, ge2020-01 or ge2020-01-01") from None


def _date_condition(name: str, prefix: str, rest: str, value: str) -> Any:
    """R4 search.html, 3.1.1.4.2 (date): a search value is an implicit range (``2021`` is all of 2021),
    and so is the target: from its start at its precision (column ``date``: ``2021-04`` starts on
    04-01) to the last day it covers (``date_end``: 04-30); an ongoing Period has no last day (R4
    datatypes: "If the end of the period is missing, it means that the period is ongoing"), a Period
    with an end only no first day: that side is unbounded. "eq: the range of the search value fully
    contains the range of the target value"; "ne": does not; "gt: the range above the search value
    intersects (i.e. overlaps) with the range of the target value"; "ge": gt "or the range of the
    search value fully contains the range of the target value"; lt / le the same below. ge and le
    are read as HAPI reads them (the clients' oracle): a target reaching into the search range from
    outside it matches ge (le), though the search range does not contain it."""
    low, high = _date_bounds(name, rest, value)
    start, last = resources.c.date, resources.c.date_end
    text = func.substr(start, 1, 10)
    first = text.concat(func.substr("-01-01", func.length(text) - 3))  # padded as the search value is
    contains = and_(start.is_not(None), first >= low, last.is_not(None), last <= high)
    condition = {
        "eq": contains,
        "ne": not_(contains),
        "gt": or_(last.is_(None), last > high),
        "ge": or_(last.is_(None), last >= low),
        "lt": or_(start.is_(None), first < low),
        "le": or_(start.is_(None), first <= high),
    }[prefix]
    return and_(or_(start.is_not(None), last.is_not(None)), condition)


def query(search: Search) -> Select[Any]:
    """The page query (one more row than the page, to know whether there is a next page)."""
    base = (
        select(resources, cases.c.source_system)
        .join(cases, cases.c.id == resources.c.case_ref)
        .where(resources.c.resource_type == search.resource_type, resources.c.deleted == 0)
    )
    for condition in search.conditions:
        base = base.where(condition)
    key = tuple_(resources.c.last_updated, resources.c.id)  # served by the (type, last_updated, id) index
    if search.before is not None:
        base = base.where(key < tuple_(*search.before))
        return base.order_by(resources.c.last_updated.desc(), resources.c.id.desc()).limit(search.count + 1)
    if search.after is not None:
        base = base.where(key > tuple_(*search.after))
    return base.order_by(resources.c.last_updated, resources.c.id).limit(search.count + 1)


def count_query(search: Search) -> Select[Any]:
    base = select(func.count()).select_from(resources)
    base = base.where(resources.c.resource_type == search.resource_type, resources.c.deleted == 0)
    for condition in search.conditions:
        base = base.where(condition)
    return base
