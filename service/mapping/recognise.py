"""Plain FHIR R4 resources, as an EHR sends them -> the profiled Bundle that ``bundle_to_case`` reads.

An EHR's resources carry neither our profiles nor our business identifiers, and may use the
hospital's own codes. ``profile_bundle`` translates hospital codes through the ConceptMaps in
``mappings/local/``, recognises each resource's template of ``mappings/case-fhir.yaml`` from its
codes, places it in the case (its element key) and gives it the ``meta.profile``, business identifier,
fullUrl and conditional request that ``case_to_bundle`` would. Everything it recognises comes from
the templates and code tables; a resource it cannot recognise or place is returned as an ``Issue``.

Recognition: a template's *pattern* is every coded value it fixes (``fixed:``, alternatives under
``when`` counted as one) and the code table of the field written at the resource's code element
(``code``, ``medicationCodeableConcept``). A resource fits a template of its type when no pattern
element it carries contradicts it, at least one matches (unless the template has no pattern, like
Patient), and the template's ``when`` on a field holds for the value read back. The fit matching
the most pattern elements wins; on a tie, the one with fewer pattern elements the resource lacks
(the more general template: a tumour size with no method is not a pathological one). Known
ambiguity: a diagnosis tumour size with method ``pathology`` is written exactly like the
pathological tumour size, and is read as that.

Placement (element keys):

- A list item's index comes from sorting its siblings by date (undated last), then by the position
  of their coded values in their code tables (body sites first: renal veins left before right), then
  by bundle order. Only resources alike in date and codes fall back to bundle order, so the same
  resources sent in another order get the same keys (and business identifiers).
- A child item's parent comes from the reference its template writes to the parent (``partOf`` of
  an IVC management, organ resection or medication), else from equal values of the fields it shares
  with the parent (``^.date``), else from the only candidate; if several fit, it is reported, never
  guessed.
- A template with a ``suffix`` shares its item with the unsuffixed template of the same ``each``: the
  item comes from a reference either way (perioperative ``partOf``; the IVC management's
  ``focalDevice`` to its graft), else from equal shared fields, else from the only candidate. A shared
  date must be equal (both unknown is equal): a graft patency dated 2022-04-12 is not the visit of a
  disease status dated unknown, which would take a date no resource stated for it; it is reported
  (issue 15, second outside review, M5). ``unknown agrees with any date`` holds only for the
  Procedures of one surgery (a child's ``^.date``), which ``partOf`` or the only surgery links.
- A suffixed template with several ``each`` patterns (imaging findings) shares the item of the
  resource it references with ``{item}`` (``partOf`` its imaging study); without one it is reported.
- Templates with several ``each`` patterns (imaging, lab results) are placed by date: undated, or on
  or before the first surgery (without surgery: the diagnosis date), the first pattern
  (``diagnosis.*``); later, the pattern whose anchor is nearest in time, where the anchor of
  ``follow_up[*].*`` is each visit's date and that of ``postoperative.*`` the first surgery date (a
  tie goes to the later anchor); with no anchor, the first pattern when there is no surgery (a
  result after the diagnosis is work-up), but a result certainly after the surgery is never work-up
  (data set: "diagnosis <= surgery <= follow-up"): with no visit of known date to attach it to
  (imaging with every visit dated unknown) it is reported, not guessed onto the only visit, as a
  result that overlaps the surgery is (issue 15, second outside review, HF1). A surgery's date is the one the
  case will keep: the most precise date its resection and the Procedures part of it agree on (a
  resection dated ``2021`` whose parts say ``2021-04-12`` is 2021-04-12; issue 15, outside review).
  Dates compare at the coarser precision (data set, "Incomplete records"): a result whose date
  overlaps the surgery's (surgery ``2021``, result ``2021-04-19``) may be either, so it is reported,
  not guessed, unless it is on or before the diagnosis date (the diagnosis precedes the surgery).
  A ``dateTime`` with a time is its date as written and a ``Period`` its start (``datetimes``).
- Two resources for one key (two smoking statuses): the latest-dated is kept (first in the bundle
  on a tie), the others are reported.
"""

from __future__ import annotations

import copy
import json
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from service.codes import MAPPINGS_DIR, table, tables
from service.mapping import datetimes, paths
from service.mapping.spec import (
    CONVERTERS,
    IDENTIFIER_SYSTEM,
    PROFILE_PREFIX,
    Context,
    Field,
    MappingError,
    Template,
    case_path,
    case_tokens,
    conditional_url,
    fixed_value,
    full_url,
    identifier_value,
    spec,
)
from service.model import dates

LOCAL_DIR = MAPPINGS_DIR / "local"
BUNDLE_TYPES = ("transaction", "batch", "collection")
CODE_ELEMENTS = ("code", "medicationCodeableConcept")
"""Elements that say what a resource is; the code table of the field written there is part of the pattern."""
USABLE_EQUIVALENCE = frozenset({"equivalent", "equal", "wider", "subsumes"})
"""ConceptMap equivalences under which the target is true of whatever the source code describes."""
SERVER_META = ("versionId", "lastUpdated")

# Case-model items the date rule for templates with several `each` patterns is anchored at.
_SURGERY = ("surgery", "*")
_DIAGNOSIS = ("diagnosis",)

Tokens = tuple[str | int, ...]
Translations = Mapping[tuple[str, str], tuple[dict[str, str], ...]]


@dataclass(frozen=True)
class Issue:
    """A resource left out of the case, and why; returned to the caller, never raised."""

    entry: int
    resource: str
    message: str

    def __str__(self) -> str:
        return f"entry[{self.entry}] {self.resource}: {self.message}"


@dataclass(frozen=True)
class Profiled:
    """The profiled transaction Bundle (input of ``bundle_to_case``) and what was left out of it."""

    bundle: dict[str, Any]
    issues: tuple[Issue, ...]
    placed: Mapping[int, str] = field(default_factory=dict)
    """Input entry position -> the fullUrl (``urn:uuid:``) its profiled resource got."""


# ---- hospital codes --------------------------------------------------------------------------


def _known_codings() -> dict[tuple[str, str], str]:
    """Every coding a translation may target, with its display: codes.yaml values and ``codes:``."""
    out: dict[tuple[str, str], str] = {}
    for t in tables().values():
        for key, value in t.values.items():
            out[(t.system, key)] = value.display
            if value.standard:
                out[(value.standard.system, value.standard.code)] = value.standard.display
    for c in spec().codes.values():
        out[(c["system"], str(c["code"]))] = c["display"]
    return out


def load_concept_maps(directory: Path) -> dict[tuple[str, str], tuple[dict[str, str], ...]]:
    """(source system, code) -> target codings, from every ``*.json`` ConceptMap in ``directory``.

    A target that is not a code of ``mappings/`` is an error naming the file: a translation to a code
    nobody reads back would lose the value silently.
    """
    known = _known_codings()
    out: dict[tuple[str, str], tuple[dict[str, str], ...]] = {}
    for file in sorted(directory.glob("*.json")):
        cm = json.loads(file.read_text())
        if cm.get("resourceType") != "ConceptMap":
            raise MappingError(f"{file.name}: not a ConceptMap")
        for group in cm.get("group", []):
            source, target = group.get("source"), group.get("target")
            if not source or not target:
                raise MappingError(f"{file.name}: every group needs a source and a target system")
            for element in group.get("element", []):
                for t in element.get("target", []):
                    where = f"{file.name}: {source}|{element.get('code')} -> {target}|{t.get('code')}"
                    if "equivalence" not in t:
                        raise MappingError(f"{where}: no equivalence")
                    if t["equivalence"] not in USABLE_EQUIVALENCE:
                        continue
                    code = str(t["code"])
                    if (target, code) not in known:
                        raise MappingError(f"{where}: the target is not a code of mappings/")
                    coding = {"system": target, "code": code, "display": known[(target, code)]}
                    key = (source, str(element["code"]))
                    if coding not in out.get(key, ()):
                        out[key] = (*out.get(key, ()), coding)
    return out


@cache
def local_concept_maps() -> dict[tuple[str, str], tuple[dict[str, str], ...]]:
    """The ConceptMaps of ``mappings/local/``, read once per process."""
    return load_concept_maps(LOCAL_DIR)


def translate(node: Any, maps: Translations) -> None:
    """Add the translation of every hospital coding to its CodeableConcept (in place; originals kept)."""
    if isinstance(node, list):
        for item in node:
            translate(item, maps)
        return
    if not isinstance(node, dict):
        return
    codings = node.get("coding")
    if isinstance(codings, list):
        have = {_pair(c) for c in codings}
        for c in list(codings):
            for target in maps.get(_pair(c), ()):
                if _pair(target) not in have:
                    codings.append(dict(target))
                    have.add(_pair(target))
    for value in node.values():
        translate(value, maps)


def _pair(coding: Any) -> tuple[str, str]:
    if not isinstance(coding, dict):
        return ("", "")
    return (str(coding.get("system", "")), str(coding.get("code", "")))


# ---- recognition ------------------------------------------------------------------------------


def _codings(node: Any) -> frozenset[tuple[str, str]]:
    """The (system, code) pairs of a CodeableConcept or Coding."""
    if not isinstance(node, dict):
        return frozenset()
    items: Any = node.get("coding") if "coding" in node else [node]
    if not isinstance(items, list):
        return frozenset()
    return frozenset(_pair(c) for c in items if isinstance(c, dict) and c.get("code") is not None)


@dataclass(frozen=True)
class _Pattern:
    """One element of a template's pattern: the codings it fixes, or the code table its value is in."""

    path: str
    codings: frozenset[tuple[str, str]] = frozenset()
    table: str | None = None

    def verdict(self, resource: dict[str, Any]) -> bool | None:
        """True if the resource's element fits, False if it contradicts, None if the element is absent."""
        node = paths.get(resource, self.path)
        have = _codings(node)
        if not have:
            return None
        if self.table is not None:
            concept = node if "coding" in node else {"coding": [node]}
            return table(self.table).key_of(concept) is not None
        return bool(have & self.codings)


@cache
def _patterns() -> dict[str, tuple[_Pattern, ...]]:
    out: dict[str, tuple[_Pattern, ...]] = {}
    for t in spec().templates:
        fixed: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for fx in t.group.fixed:
            fixed[fx.path] |= _codings(fixed_value(fx.value))
        coded = [
            _Pattern(f.path, table=f.arg)
            for f in t.group.fields
            if f.kind == "codeable" and f.path in CODE_ELEMENTS and f.arg
        ]
        out[t.name] = (*(_Pattern(p, frozenset(c)) for p, c in fixed.items() if c), *coded)
    return out


def _read(f: Field, resource: dict[str, Any]) -> Any:
    """A field's case value read back from the resource; None if absent or unreadable."""
    if f.items is not None or paths.has_every(f.path):
        return None
    raw = paths.get(resource, f.path)
    if raw is None:
        return None
    try:
        return CONVERTERS[f.kind][1](raw, f.arg, Context())
    except (MappingError, AttributeError):  # bundle_to_case reports it, with the element path
        return None


def read_field(template: Template, name: str, resource: dict[str, Any]) -> Any:
    """The case value of ``template``'s field ``name`` read back from ``resource`` (None if absent,
    unreadable, or no such field): what ``bundle_to_case`` would store there."""
    f = next((f for f in template.group.fields if f.field == name), None)
    return None if f is None else _read(f, resource)


def _when_holds(template: Template, resource: dict[str, Any]) -> bool:
    cond = template.when
    if cond is None or cond.present:  # `present` decides whether forward writes it, not what it is
        return True
    f = next((f for f in template.group.fields if f.field == cond.field), None)
    if f is None:
        return True
    return (_read(f, resource) in cond.values) != cond.negate


def recognise(resource: dict[str, Any]) -> Template | str:
    """The template a plain resource is an instance of, or why there is none."""
    fits: list[tuple[int, int, Template]] = []
    for t in spec().templates:
        if t.resource_type != resource.get("resourceType"):
            continue
        pattern = _patterns()[t.name]
        verdicts = [p.verdict(resource) for p in pattern]
        matched = verdicts.count(True)
        if False in verdicts or (pattern and not matched) or not _when_holds(t, resource):
            continue
        fits.append((matched, -verdicts.count(None), t))
    if not fits:
        return f"{UNRECOGNISED} ({_describe(resource)})"
    best = max((m, n) for m, n, _ in fits)
    top = [t.name for m, n, t in fits if (m, n) == best]
    if len(top) > 1:
        profiles = ", ".join(PROFILE_PREFIX + name for name in top)
        return f"it fits several IVC-LMS profiles equally ({profiles}; {_describe(resource)})"
    return next(t for m, n, t in fits if (m, n) == best)


UNRECOGNISED = "fits none of the IVC-LMS profiles"
"""Why a resource is left out of a case (said to EHRs: profiles and codes, not our files)."""
PRIMARY = "primary-cancer"
"""The resource that makes a record an IVC-LMS case: the primary IVC leiomyosarcoma Condition."""


def _coded(pairs: frozenset[tuple[str, str]]) -> str:
    return " or ".join(f"{system}|{code}" for system, code in sorted(pairs))


def what_a_case_is() -> str:
    """What the service takes, in the words of FHIR (profiles, codes), for an EHR whose data is not a case."""
    template = next(t for t in spec().templates if t.name == PRIMARY)
    by_path = {p.path: p.codings for p in _patterns()[PRIMARY] if p.codings}
    code = _coded(by_path.get("code", frozenset()))
    site = _coded(by_path.get("bodySite[0]", frozenset()))
    return (
        "this service takes IVC leiomyosarcoma cases: one Patient with a Condition "
        f"(profile {template.profile}) coded {code}"
        + (f" with bodySite {site}" if site else "")
        + f", and the resources linked to them that fit the IVC-LMS profiles ({PROFILE_PREFIX}*)"
    )


def is_primary_cancer(resource: dict[str, Any], maps: Translations | None = None) -> bool:
    """Whether a resource (plain or profiled) is the primary IVC leiomyosarcoma Condition of a case."""
    if resource.get("resourceType") != "Condition":
        return False
    resource = copy.deepcopy(resource)
    translate(resource, local_concept_maps() if maps is None else maps)
    found = recognise(resource)
    return not isinstance(found, str) and found.name == PRIMARY


def _describe(resource: dict[str, Any]) -> str:
    codes = [
        f"{path} {system}|{code}"
        for path in (*CODE_ELEMENTS, "category")
        for system, code in sorted(_codings(paths.get(resource, path)))
    ]
    return ", ".join(codes) or "no code"


# ---- placement -----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Found:
    position: int
    label: str
    resource: dict[str, Any]
    template: Template
    pattern: Tokens = ()
    link: _Found | None = None
    item: Tokens | None = None


def _split(pattern: Tokens) -> tuple[Tokens, Tokens]:
    """``surgery[*].organs_resected[*]`` -> (``surgery[*]``, ``organs_resected[*]``): parent item, rest."""
    stars = [i for i, t in enumerate(pattern) if t == "*" and i < len(pattern) - 1]
    cut = stars[-1] + 1 if stars else 0
    return pattern[:cut], pattern[cut:]


def _ref_target(to: str, each: str) -> tuple[Tokens, str]:
    """A ref's ``to`` as a pattern and suffix: ``surgery[{0}]`` -> (``surgery[*]``, ``""``)."""
    text = re.sub(r"\{\d+\}", "*", to.replace("{item}", each))
    path, _, suffix = text.partition("#")
    return tuple(case_tokens(path)), f"#{suffix}" if suffix else ""


def _patterns_of(template: Template) -> list[Tokens]:
    return [tuple(case_tokens(e)) for e in template.each]


def _pattern_text(f: _Found) -> str:
    return f.template.each[_patterns_of(f.template).index(f.pattern)]


def _text(value: Any) -> str | None:
    """A FHIR date or dateTime as the case date it gives (a timed one's date as written), else None."""
    value = datetimes.case_date(value)
    try:
        return value if isinstance(value, str) and dates.parse(value) else None
    except dates.DateError:
        return None


def _day(text: str | None) -> int | None:
    """A case date as a day number (partial dates at their first day), else None."""
    return None if text is None else dates.parse(text).earliest.toordinal()


def _date_field(template: Template) -> Field | None:
    return next(
        (
            f
            for f in template.group.fields
            if f.kind == "date" and not f.field.startswith(("$.", "^.")) and not paths.has_every(f.path)
        ),
        None,
    )


def _date_text(f: _Found) -> str | None:
    """The case date a resource gives (``performedPeriod`` by its start), else None."""
    field = _date_field(f.template)
    return _text(datetimes.read_date(f.resource, field.path)[0]) if field else None


def _date_element(f: _Found) -> str:
    """The element a resource's date was read from (``effectiveDateTime``, ``performedPeriod.start``)."""
    field = _date_field(f.template)
    return datetimes.read_date(f.resource, field.path)[1] if field else "date"


def _shared_date_path(f: _Found) -> str:
    """The element where a child resource repeats its parent's date (``^.date``)."""
    return next(fl.path for fl in f.template.group.fields if fl.field == "^.date")


def _date(f: _Found) -> int | None:
    return _day(_date_text(f))


def _order(f: _Found) -> tuple[Any, ...]:
    """Sort key of list siblings: date (undated last), coded values in table order (sites first), bundle."""
    day = _date(f)
    coded = [
        fl
        for fl in f.template.group.fields
        if fl.kind == "codeable" and fl.arg and not fl.field.startswith(("$.", "^."))
    ]
    coded.sort(key=lambda fl: not fl.path.startswith("bodySite"))
    positions = []
    for fl in coded:
        key = _read(fl, f.resource)
        keys = list(table(str(fl.arg)).values)
        positions.append(keys.index(str(key)) if str(key) in keys else len(keys))
    return (day is None, day or 0, tuple(positions), f.position)


class _Placer:
    """Gives every recognised resource its case item; what cannot be placed becomes an Issue."""

    def __init__(self, found: list[_Found], refs: dict[str, int]) -> None:
        self.found = found
        self.by_position = {f.position: f for f in found}
        self.refs = refs
        self.issues: list[Issue] = []
        self.unplaceable: list[_Found] = []
        """Resources whose date cannot be placed before or after the surgery (reported, left out)."""

    def place(self) -> list[_Found]:
        for f in self.found:
            if len(f.template.each) == 1:
                f.pattern = tuple(case_tokens(f.template.each[0]))
        for f in self.found:  # needs the patterns of surgeries, diagnosis and visits
            if len(f.template.each) > 1 and not f.template.suffix:
                self._by_date(f)
        self.found = [f for f in self.found if f not in self.unplaceable]
        for f in self.found:  # needs the patterns of the items they share
            if len(f.template.each) > 1 and f.template.suffix:
                self._by_reference(f)
        for f in self.found:  # needs every pattern
            if len(f.template.each) == 1:
                self._link(f)
        for depth in sorted({len(f.pattern) for f in self.found}):
            level = [f for f in self.found if len(f.pattern) == depth]
            self._index([f for f in level if not self._shares_item(f)])
            for f in level:
                if self._shares_item(f):
                    self._share(f)
        return self._unique([f for f in self.found if f.item is not None])

    def _report(self, f: _Found, message: str) -> None:
        self.issues.append(Issue(f.position, f.label, f"{f.template.name}: {message}"))

    def _follow(self, f: _Found, path: str) -> _Found | None:
        node = paths.get(f.resource, path)
        ref = node.get("reference") if isinstance(node, dict) else None
        position = resolve(ref, self.refs)
        return self.by_position.get(position) if position is not None else None

    def _shares_item(self, f: _Found) -> bool:
        """Whether ``f`` is of a suffixed template sharing a list item with an unsuffixed template."""
        return (
            bool(f.template.suffix)
            and "*" in f.pattern
            and any(not t.suffix and f.pattern in _patterns_of(t) for t in spec().templates)
        )

    def _by_reference(self, f: _Found) -> None:
        """A suffixed template with several ``each`` patterns (imaging findings) shares the item of the
        resource its ``{item}`` reference points to (``partOf`` its imaging study); never by date."""
        f.pattern = tuple(case_tokens(f.template.each[0]))
        for ref in f.template.refs:
            target = self._follow(f, ref.path) if "{item}" in ref.to else None
            if target is not None and not target.template.suffix and target.template.each == f.template.each:
                f.pattern, f.link = target.pattern, target
                return
        self._report(f, "it references no resource whose item it shares")

    def _candidates(self, pattern: Tokens) -> list[_Found]:
        return [g for g in self.found if g.pattern == pattern and not g.template.suffix]

    def _link(self, f: _Found) -> None:
        """The resource whose item ``f``'s item hangs under (or, for a suffixed template, shares)."""
        shares = self._shares_item(f)
        want = f.pattern if shares else _split(f.pattern)[0]
        if not want:
            return
        each = _pattern_text(f)
        for ref in f.template.refs:
            if _ref_target(ref.to, each) == (want, ""):
                target = self._follow(f, ref.path)
                if target is not None and target.pattern == want and not target.template.suffix:
                    f.link = target
                    return
        if shares:
            for g in self.found:
                for ref in g.template.refs:
                    points_to = _ref_target(ref.to, _pattern_text(g))
                    if points_to == (f.pattern, f.template.suffix) and self._follow(g, ref.path) is f:
                        f.link = g
                        return
        f.link = self._by_shared_fields(f, self._candidates(want), shares)

    def _by_shared_fields(self, f: _Found, candidates: list[_Found], shares: bool) -> _Found | None:
        """The only candidate that agrees with ``f`` on every value both write (``^.x`` of a child is
        its parent's ``x``; a suffixed template shares its item's fields)."""
        fields = f.template.group.fields
        if shares:
            mine = {fl.field: _read(fl, f.resource) for fl in fields if not fl.field.startswith(("$.", "^."))}
        else:
            mine = {fl.field[2:]: _read(fl, f.resource) for fl in fields if fl.field.startswith("^.")}
        dated = {fl.field for fl in fields if fl.kind == "date"} if shares else set()
        fitting = []
        for c in candidates:
            theirs = {fl.field: fl for fl in c.template.group.fields}
            if all(
                _agree(value, _read(theirs[name], c.resource), name in dated)
                for name, value in mine.items()
                if name in theirs
            ):
                fitting.append(c)
        if len(fitting) == 1:
            return fitting[0]
        what = "item" if shares else "parent item"
        if fitting:
            self._report(f, f"nothing tells which of {len(fitting)} candidates is its {what}")
        elif candidates:
            said = ", ".join(f"{name} {mine[name] or 'unknown'}" for name in sorted(dated) if name in mine)
            self._report(
                f,
                f"no candidate for its {what} agrees with it"
                + (f" ({said}: an item dated otherwise, or unknown, is not its own)" if said else ""),
            )
        else:
            self._report(f, f"its {what} is not in the bundle")
        return None

    def _by_date(self, f: _Found) -> None:
        """Pattern (and parent) of a template with several ``each`` patterns (see the module doc)."""
        first = tuple(case_tokens(f.template.each[0]))
        f.pattern = first
        text = _date_text(f)
        if text is None:
            return
        surgeries = [t for s in self._candidates(_SURGERY) if (t := self._surgery_date(s)) is not None]
        diagnoses = [t for s in self._candidates(_DIAGNOSIS) if (t := _date_text(s)) is not None]
        surgery = min(surgeries, key=dates.sort_key, default=None)
        diagnosis = min(diagnoses, key=dates.sort_key, default=None)
        boundary = surgery if surgery is not None else diagnosis
        if boundary is None or dates.parse(text).latest <= dates.parse(boundary).earliest:
            return  # undated anchors, or on or before the first surgery (without one: the diagnosis)
        if not dates.certainly_before(boundary, text):
            if diagnosis is not None and dates.parse(text).latest <= dates.parse(diagnosis).earliest:
                return  # on or before the diagnosis, which precedes the surgery
            what = "surgery" if surgery is not None else "diagnosis"
            self._report(
                f,
                f"its {_date_element(f)} ({text}) cannot be placed before or after the {what} "
                f"({boundary}): the two dates overlap; give the {what}'s date or this one to the day",
            )
            self.unplaceable.append(f)
            return
        day = _day(text)
        assert day is not None
        anchors: list[tuple[int, Tokens, _Found | None]] = []
        for each in f.template.each[1:]:
            pattern = tuple(case_tokens(each))
            parent = _split(pattern)[0]
            if parent:
                anchors += [(d, pattern, v) for v in self._candidates(parent) if (d := _date(v)) is not None]
            elif surgery is not None:
                anchors.append((dates.parse(surgery).earliest.toordinal(), pattern, None))
        if anchors:
            _, f.pattern, f.link = min(anchors, key=lambda a: (abs(day - a[0]), -a[0]))
        elif surgery is not None:  # certainly after the surgery: never work-up (issue 15, review 2 HF1)
            self._report(
                f,
                f"its {_date_element(f)} ({text}) cannot be placed: after the surgery ({surgery}) and no "
                "follow-up visit of known date; give the date of the follow-up visit it belongs to",
            )
            self.unplaceable.append(f)

    def _surgery_date(self, surgery: _Found) -> str | None:
        """The date the case will keep for a surgery: the most precise of the dates its resection and
        the Procedures part of it give, when they agree (``bundle_to_case`` refuses them otherwise; here
        the resection's own date is used). Parts name their surgery by ``partOf``, else the only one."""
        own = _date_text(surgery)
        only = len(self._candidates(_SURGERY)) == 1
        given = [own] if own is not None else []
        for g in self.found:
            if g is surgery or g.pattern[:2] != _SURGERY or len(g.pattern) <= 2:
                continue
            if not any(fl.field == "^.date" for fl in g.template.group.fields):
                continue
            mine = self._follow(g, "partOf[0]") is surgery or (only and g.resource.get("partOf") is None)
            text = _text(datetimes.read_date(g.resource, _shared_date_path(g))[0]) if mine else None
            if text is not None:
                given.append(text)
        if not all(dates.agree(a, b) for a in given for b in given):
            return own
        return max(given, key=len, default=None)

    def _index(self, level: list[_Found]) -> None:
        groups: dict[tuple[Tokens, Tokens], list[_Found]] = defaultdict(list)
        for f in level:
            parent, tail = _split(f.pattern)
            if parent:
                if f.link is None or f.link.item is None:
                    if f.link is not None:
                        self._report(f, "its parent item could not be placed")
                    continue
                head = f.link.item
            else:
                head = ()
            if tail and tail[-1] == "*":
                groups[(f.pattern, head)].append(f)
            else:
                f.item = (*head, *tail)
        for (pattern, head), members in groups.items():
            tail = _split(pattern)[1]
            for i, f in enumerate(sorted(members, key=_order)):
                f.item = (*head, *tail[:-1], i)

    def _share(self, f: _Found) -> None:
        if f.link is not None and f.link.item is not None:
            f.item = f.link.item
        elif f.link is not None:
            self._report(f, "its item could not be placed")

    def _unique(self, placed: list[_Found]) -> list[_Found]:
        by_key: dict[str, list[_Found]] = defaultdict(list)
        for f in placed:
            by_key[_key(f)].append(f)
        kept = []
        for key, same in by_key.items():
            same.sort(key=lambda f: (_date(f) is None, -(_date(f) or 0), f.position))
            kept.append(same[0])
            for f in same[1:]:
                self._report(f, f"{key} is already given by entry[{same[0].position}]")
        return kept


def _agree(mine: Any, theirs: Any, date: bool) -> bool:
    """Whether two resources' values of a field they share allow them to be one item. An absent value
    agrees with any, except a date of resources sharing an item by no reference (a graft patency and
    a disease status): dated and unknown are not one visit, or the visit would take a date no
    resource stated for the other (issue 15, second outside review, M5). Both unknown agree."""
    if date:
        return bool(mine == theirs)
    return mine is None or theirs in (None, mine)


def _key(f: _Found) -> str:
    assert f.item is not None
    return case_path(list(f.item)) + f.template.suffix


def resolve(ref: Any, refs: Mapping[str, int]) -> int | None:
    """The entry a reference points to: by fullUrl, ``Type/id``, or an absolute URL ending in it."""
    if not isinstance(ref, str):
        return None
    if ref in refs:
        return refs[ref]
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    return refs.get("/".join(parts[-2:])) if len(parts) >= 2 else None


def _reference_map(entries: list[Any]) -> dict[str, int]:
    refs: dict[str, int] = {}
    for i, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        if entry.get("fullUrl"):
            refs[str(entry["fullUrl"])] = i
        if resource.get("id"):
            refs[f"{resource.get('resourceType')}/{resource['id']}"] = i
    return refs


def _rewrite(node: Any, new: Mapping[int, str], refs: Mapping[str, int]) -> None:
    """Point every reference to a placed resource at its new fullUrl (in place)."""
    if isinstance(node, list):
        for item in node:
            _rewrite(item, new, refs)
    elif isinstance(node, dict):
        position = resolve(node.get("reference"), refs)
        if position is not None and position in new:
            node["reference"] = new[position]
        for value in node.values():
            _rewrite(value, new, refs)


# ---- the Bundle -----------------------------------------------------------------------------------


def profile_bundle(
    bundle: dict[str, Any],
    *,
    source_system: str,
    case_id: str | None = None,
    local_maps: Translations | None = None,
) -> Profiled:
    """The Bundle of profiled resources ``bundle_to_case`` reads, for a Bundle of plain R4 resources.

    ``case_id`` defaults to the Patient's first identifier. Exactly one Patient is required (a
    ``MappingError`` otherwise); any other resource that cannot be recognised or placed is returned
    as an Issue and left out. ``local_maps`` defaults to the ConceptMaps of ``mappings/local/``.
    """
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in BUNDLE_TYPES:
        raise MappingError(f"expected a Bundle of type {', '.join(BUNDLE_TYPES)}")
    if not source_system or "|" in source_system:
        raise MappingError(f"source system {source_system!r} must be a URI without '|'")
    maps = local_concept_maps() if local_maps is None else local_maps
    entries = bundle.get("entry", [])
    refs = _reference_map(entries)
    found: list[_Found] = []
    issues: list[Issue] = []
    for i, entry in enumerate(entries):
        resource = copy.deepcopy(entry.get("resource")) if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or "resourceType" not in resource:
            issues.append(Issue(i, "entry", "no resource"))
            continue
        label = _label(entry, resource)
        translate(resource, maps)
        template = recognise(resource)
        if isinstance(template, str):
            if resource["resourceType"] == "Patient":
                raise MappingError(f"entry[{i}] {label}: {template}")
            issues.append(Issue(i, label, template))
            continue
        found.append(_Found(i, label, resource, template))
    patients = [f for f in found if f.resource["resourceType"] == "Patient"]
    if len(patients) != 1:
        raise MappingError(f"the bundle holds {len(patients)} Patients; a case needs exactly one")
    case_id = case_id or _patient_id(patients[0].resource)
    placer = _Placer(found, refs)
    placed = placer.place()
    issues += placer.issues
    ids = {"source_system": source_system, "case_id": case_id}
    values = {f.position: identifier_value(ids, _key(f)) for f in placed}
    new = {position: full_url(value) for position, value in values.items()}
    order = {t.name: i for i, t in enumerate(spec().templates)}
    placed.sort(key=lambda f: (order[f.template.name], f.template.each.index(_pattern_text(f)), f.item))
    out = []
    for f in placed:
        resource = f.resource
        _rewrite(resource, new, refs)
        resource.pop("id", None)
        meta = {k: v for k, v in resource.get("meta", {}).items() if k not in SERVER_META}
        meta["profile"] = [
            f.template.profile,
            *(p for p in meta.get("profile", []) if p != f.template.profile),
        ]
        resource["meta"] = meta
        others = [i for i in resource.get("identifier", []) if i.get("system") != IDENTIFIER_SYSTEM]
        resource["identifier"] = [{"system": IDENTIFIER_SYSTEM, "value": values[f.position]}, *others]
        out.append(
            {
                "fullUrl": new[f.position],
                "resource": resource,
                "request": {
                    "method": "PUT",
                    "url": conditional_url(resource["resourceType"], values[f.position]),
                },
            }
        )
    issues.sort(key=lambda issue: issue.entry)
    bundle_out = {"resourceType": "Bundle", "type": "transaction", "entry": out}
    return Profiled(bundle_out, tuple(issues), {f.position: new[f.position] for f in placed})


def _patient_id(patient: dict[str, Any]) -> str:
    for ident in patient.get("identifier", []):
        if ident.get("system") != IDENTIFIER_SYSTEM and ident.get("value"):
            return str(ident["value"])
    raise MappingError("the Patient has no identifier to take the case id from; pass case_id")


def _label(entry: dict[str, Any], resource: dict[str, Any]) -> str:
    """How an Issue names a resource: ``Type/id``, else ``Type <fullUrl>``."""
    if resource.get("id"):
        return f"{resource['resourceType']}/{resource['id']}"
    return " ".join(str(x) for x in (resource["resourceType"], entry.get("fullUrl")) if x)
