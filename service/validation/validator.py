"""The validator: walks a resource (or a Bundle) along the compiled snapshot of its profile.

Every rule comes from a StructureDefinition, ValueSet or CodeSystem (base R4 from HAPI's jar, or our
package); the walker only knows what each kind of rule means. Where HAPI's validator has a default
behaviour the rules leave open, the walker does the same so that both give the same verdict:

- an extension whose URL matches no slice and no loaded definition is accepted (HAPI's
  ``anyExtensionsAllowed`` default), with an information issue;
- a reference is type-checked only when it resolves (inside a Bundle, by ``fullUrl``); an unresolved
  ``Type/id`` of the wrong type is a warning, since HAPI does not check it;
- a code from a system that is not loaded (LOINC, SNOMED CT, RxNorm, ...) can only be checked by its
  enumeration in one of our ValueSets; nothing is reported when even that is impossible.

``ele-1`` (every element has a value or children) is checked structurally, the one invariant not run
through FHIRPath: it sits on every element and fhirpathpy lacks ``hasValue()``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from service.codes import CANONICAL
from service.errors import Issue
from service.validation import crosscheck, definitions
from service.validation.fetch import DEFAULT_DIR
from service.validation.fhirpath import Invariants
from service.validation.model import (
    PRIMITIVE_TYPES,
    Constraint,
    Elem,
    TypeRef,
    compile_snapshot,
    json_name,
    primitive_regex,
)
from service.validation.native import ALWAYS, CHECKS, TYPE_PATHS, Check, RootCheck
from service.validation.snapshot import SnapshotError, cached_snapshots, generate, generate_one
from service.validation.terminology import Terminology

CORE = "http://hl7.org/fhir/StructureDefinition/"
_STRUCTURAL = "ele-1"
_LITERAL_REF = re.compile(r"^([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?$")
_EXTENSIONS = ("extension", "modifierExtension")
_INTEGERS = {"integer": None, "positiveInt": 1, "unsignedInt": 0}
_RESOURCE_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_CALENDAR = frozenset({"date", "dateTime", "instant"})
_MAX_STRING = 1024 * 1024
_CLEAN_LIMIT = 20_000
_CLEAN_MAX_REPR = 2048
"""The memo holds at most ~40 MB of keys: values with a longer repr (an Attachment's data, a long
text) rarely recur and are walked each time."""
_BACKBONE = frozenset({"", "BackboneElement", "Element"})


@dataclass
class _Run:
    """State of one validate call: issues so far and the Bundle entries references resolve against."""

    issues: list[Issue] = field(default_factory=list)
    bundle: dict[str, dict[str, Any]] | None = None
    conforms: dict[tuple[int, str], bool] = field(default_factory=dict)
    entries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(fullUrl, resource) of every Bundle entry, duplicates included."""
    history: bool = False
    """The Bundle is a history (several versions of one resource are expected)."""
    root: dict[str, Any] | None = None
    """The resource ``%rootResource`` names: the container of a contained resource, else the resource."""
    host: tuple[str, ...] | None = None
    """Set for one ``_complex`` call: the path of the primitive whose ``_name`` element it walks, which
    is where that element's extensions sit (their ``context`` is checked against it)."""
    context: int = 0
    """Counts the checks that read more than the value and its definition (references, other
    resources, ``%resource``, today's date): a value whose walk read none and found nothing is clean
    for its element wherever it recurs (``Validator._clean``)."""

    def add(self, severity: str, code: str, expression: str, message: str) -> None:
        self.issues.append(Issue(code=code, diagnostics=message, expression=expression, severity=severity))


class Validator:
    """Profile validation driven by the StructureDefinitions in profiles/ and base R4."""

    def __init__(self, defs: definitions.Definitions, snapshots: dict[str, list[dict[str, Any]]]) -> None:
        self.defs = defs
        self.snapshots = snapshots
        self.terminology = Terminology(defs)
        self.invariants = Invariants()
        self.native = True
        """Bundle invariants and ext-1 in Python (``native.py``); tests turn it off to compare."""
        self.memo = True
        self.decide = True
        """Invariants decided by an absent name (``_absent_plan``) are not run through fhirpathpy;
        tests turn it off to compare."""
        """Clean complex values are not walked again (``_clean``); tests turn it off to compare."""
        self._roots: dict[str, Elem | None] = {}
        self._type_roots: dict[str, Elem | None] = {}
        self._resource_types: dict[str, bool] = {}
        self._primitive_checks: dict[str, Callable[[Any], bool]] = {}
        self._kinds: dict[str, tuple[Callable[[Any], bool] | None, bool]] = {}
        """Type code -> its primitive check and whether it is a resource (``_kind``)."""
        self._clean: dict[tuple[Elem, TypeRef | None, bool, str], bool] = {}
        """Complex values (Coding, CodeableConcept, Extension, ...) that were found without any issue
        by a walk that read nothing but the value and its element (``_Run.context``), keyed by the
        element, type, native flag and the value's JSON: the same value there is clean again."""
        self._regex: dict[str, re.Pattern[str] | None] = {}
        self._modifiers: dict[str, bool | None] = {}
        self._plans: dict[int, tuple[tuple[Constraint, ...], list[_Planned]]] = {}
        """``Elem.checks`` (by identity; the tuple is kept so its id stays its own) -> what each of its
        invariants needs, looked up once instead of per value: the Python forms and the flags."""
        self._slice_urls: dict[Elem, str | None] = {}
        self._url_index: dict[Elem, dict[str | None, Elem] | None] = {}
        """A sliced element whose slices are told apart by ``url`` only -> URL to slice."""
        self._plain: dict[Elem, Callable[[Any], bool] | None] = {}
        self._plain_keys: dict[Elem, dict[str, tuple[Elem, Callable[[Any], bool]]]] = {}
        """An element -> its single plain children by JSON name (``_plain_single``)."""
        """A child element whose values are of one primitive type with nothing to check but the type
        (``_plain_check``) -> that type's check, so the walker tests them without a ``_value`` call."""
        self._targets: dict[int, tuple[TypeRef, dict[str, str | None], set[str]]] = {}
        """A Reference type (by identity, kept alive here) -> its target profiles' resource types."""
        self.own_canonical: str | None = None
        """Canonical base of this project's package: an extension under it is ours, so one that
        profiles/ does not define is a defect of the package (a warning), not an unknown extension."""
        self.broken: dict[str, str] = {}
        self.faulty: dict[str, str] = {}
        """Profiles given to ``with_resources`` used without the differential elements that could not be
        applied (reported as a warning wherever the profile is used)."""
        """StructureDefinitions given to ``with_resources`` whose snapshot could not be generated."""
        self.global_profiles: dict[str, tuple[str, ...]] = {}
        """Profiles every resource of a type is checked against (``ImplementationGuide.global``)."""

    @classmethod
    def load(cls, profiles_dir: Path = definitions.PROFILES_DIR, base_dir: Path = DEFAULT_DIR) -> Validator:
        """Read base R4 and the package, generate (or read cached) snapshots; once per process."""
        defs = definitions.load(profiles_dir, base_dir)
        snaps = cached_snapshots(defs, profiles_dir, base_dir / "cache")
        validator = cls(defs, snaps)
        validator.own_canonical = CANONICAL.rstrip("/") + "/"
        return validator

    def with_resources(self, resources: Sequence[dict[str, Any]]) -> Validator:
        """A validator that also knows ``resources`` (StructureDefinitions, ValueSets, CodeSystems of
        another package, e.g. the profiles a test case comes with); snapshots of the StructureDefinitions
        that have none are generated. This validator is left as it is."""
        defs = definitions.Definitions(
            structures=dict(self.defs.structures),
            value_sets=dict(self.defs.value_sets),
            code_systems=dict(self.defs.code_systems),
            base_version=self.defs.base_version,
            search_parameters=dict(self.defs.search_parameters),
            questionnaires=dict(self.defs.questionnaires),
            measures=dict(self.defs.measures),
            base_dir=self.defs.base_dir,
            newer=self.defs.newer,
        )
        for resource in resources:
            defs.add(resource)
        snaps = dict(self.snapshots)
        broken: dict[str, str] = {}
        faulty: dict[str, str] = {}
        for resource in resources:
            if resource.get("resourceType") == "StructureDefinition" and "url" in resource:
                problems: list[str] = []
                try:
                    generate_one(defs, str(resource["url"]), snaps, problems)
                except SnapshotError as error:
                    broken[str(resource["url"])] = str(error)
                if problems:
                    faulty[str(resource["url"])] = "; ".join(problems)
        for url in broken:
            defs.structures.pop(url, None)
        extended = Validator(defs, snaps)
        extended.own_canonical = self.own_canonical
        extended.broken = {**self.broken, **broken}
        extended.faulty = {**self.faulty, **faulty}
        extended.global_profiles = dict(self.global_profiles)
        for resource in resources:
            if resource.get("resourceType") == "ImplementationGuide":
                for g in resource.get("global", []):
                    if (
                        isinstance(g, dict)
                        and isinstance(g.get("type"), str)
                        and isinstance(g.get("profile"), str)
                    ):
                        have = extended.global_profiles.get(g["type"], ())
                        extended.global_profiles[g["type"]] = (*have, g["profile"])
        return extended

    # ---- public API -------------------------------------------------------------------------------

    def validate(self, resource: dict[str, Any], profiles: Sequence[str] = ()) -> list[Issue]:
        """Issues of one resource against ``profiles`` and its ``meta.profile`` (base type if none)."""
        run = _Run()
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        self._resource(resource, str(rtype), tuple(profiles), run)
        return _unique(run.issues)

    def validate_bundle(self, bundle: dict[str, Any], profiles: Sequence[str] = ()) -> list[Issue]:
        """Issues of a Bundle (against ``profiles`` too) and every entry resource; references resolve
        to entries by fullUrl."""
        run = _Run(bundle={}, history=bundle.get("type") == "history")
        for entry in bundle.get("entry", []) if isinstance(bundle.get("entry"), list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict) and "fullUrl" in entry:
                run.bundle[str(entry["fullUrl"])] = entry["resource"]  # type: ignore[index]
                run.entries.append((str(entry["fullUrl"]), entry["resource"]))
        self._resource(bundle, "Bundle", tuple(profiles), run)
        return _unique(run.issues)

    def root(self, url: str) -> Elem | None:
        """The compiled element tree of a StructureDefinition (package snapshot or base R4)."""
        url = url.split("|", 1)[0]
        if url not in self._roots:
            elements = self.snapshots.get(url)
            if elements is None:
                sd = self.defs.structure(url)
                elements = sd["snapshot"]["element"] if sd and "snapshot" in sd else None
            self._roots[url] = compile_snapshot(elements) if elements else None
        return self._roots[url]

    def type_of(self, url: str) -> str | None:
        sd = self.defs.structure(url)
        return str(sd["type"]) if sd else None

    # ---- resources -------------------------------------------------------------------------------

    def _resource(
        self, res: Any, expr: str, profiles: tuple[str, ...], run: _Run, contained: bool = False
    ) -> None:
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            run.add("error", "structure", expr, "A resource must be a JSON object with a resourceType")
            return
        run.context += 1  # its rules read the Bundle and %resource
        rtype = res["resourceType"]
        base = self.root(CORE + rtype)
        if base is None or self.defs.structure(CORE + rtype).get("kind") != "resource":  # type: ignore[union-attr]
            run.add("error", "structure", expr, f"Unknown resource type '{rtype}'")
            return
        outer = run.root
        if not contained or run.root is None:
            run.root = res
        try:
            self._resource_rules(res, expr, run)
            self._profiles(res, rtype, base, expr, profiles, run)
        finally:
            run.root = outer

    def _resource_rules(self, res: dict[str, Any], expr: str, run: _Run) -> None:
        """Rules of the R4 specification that no invariant states (the reference validator has them in
        code): the resource id's form, no extensions on it, unique ids of contained resources."""
        rid = res.get("id")
        if rid is not None and (not isinstance(rid, str) or not _RESOURCE_ID.fullmatch(rid)):
            run.add(
                "error", "value", f"{expr}.id", f"Invalid resource id {_show(rid)}: [A-Za-z0-9\\-.]{{1,64}}"
            )
        if "_id" in res:
            run.add("error", "structure", f"{expr}.id", "Extensions are not allowed on Resource.id")
        if res.get("resourceType") == "Bundle":
            _bundle_rules(res, expr, run)
        elif res.get("resourceType") == "StructureDefinition":
            self._differential(res, expr, run)
        else:
            crosscheck.check(res, expr, self.defs, run.add)
        contained = res.get("contained")
        if isinstance(contained, list):
            seen: set[str] = set()
            for i, item in enumerate(contained):
                cid = item.get("id") if isinstance(item, dict) else None
                if isinstance(cid, str):
                    if cid in seen:
                        run.add(
                            "error", "structure", f"{expr}.contained[{i}]", f"Duplicate contained id {cid!r}"
                        )
                    seen.add(cid)

    def _differential(self, sd: dict[str, Any], expr: str, run: _Run) -> None:
        """A constraining StructureDefinition without a snapshot must have a differential a snapshot can
        be generated from (the reference validator generates it and reports what fails)."""
        differential = sd.get("differential")
        base_url = sd.get("baseDefinition")
        if sd.get("derivation") != "constraint" or "snapshot" in sd or not isinstance(base_url, str):
            return
        if not isinstance(differential, dict) or not isinstance(differential.get("element"), list):
            return
        base = self.snapshots.get(base_url.split("|", 1)[0])
        base_sd = self.defs.structure(base_url)
        if base is None and base_sd is not None and "snapshot" in base_sd:
            base = base_sd["snapshot"]["element"]
        if base is None:
            return
        try:
            generate(self.defs, base, differential["element"], str(sd.get("url", "")))
        except (SnapshotError, KeyError, TypeError) as error:
            run.add("error", "structure", expr, f"Error generating the snapshot: {error}")
            return
        inherited = {e.get("id"): e for e in base}
        for i, diff in enumerate(differential["element"]):
            was = inherited.get(diff.get("id")) if isinstance(diff, dict) else None
            if was is None:
                continue
            for key, value in diff.items():
                if key.startswith("fixed") and key in was and not _equal(value, was[key]):
                    run.add(
                        "error",
                        "value",
                        f"{expr}.differential.element[{i}]",
                        f"{diff['id']}: {key} {_show(value)} overrides the fixed {_show(was[key])}",
                    )

    def _profiles(
        self, res: dict[str, Any], rtype: str, base: Elem, expr: str, profiles: tuple[str, ...], run: _Run
    ) -> None:
        declared = _declared_profiles(res)
        roots: list[Elem] = []
        wanted = [
            *profiles,
            *[p for p in declared if isinstance(p, str)],
            *self.global_profiles.get(rtype, ()),
        ]
        for url in dict.fromkeys(wanted):
            root = self.root(url)
            if root is None:
                severity = "error" if url in profiles else "warning"
                why = (
                    f"its snapshot cannot be generated: {self.broken[url]}"
                    if url in self.broken
                    else "unknown"
                )
                run.add(severity, "not-found", expr, f"Profile {url} is {why}; it was not checked")
            elif self.type_of(url) != rtype:
                run.add("error", "structure", expr, f"Profile {url} is for {self.type_of(url)}, not {rtype}")
            else:
                roots.append(root)
                if url in self.faulty:
                    run.add("warning", "structure", expr, f"Profile {url} used without: {self.faulty[url]}")
        for root in roots or [base]:
            self._complex(res, root, rtype, expr, res, run, is_resource=True)

    # ---- complex values --------------------------------------------------------------------------

    def _complex(
        self,
        value: Any,
        elem: Elem,
        type_path: str,
        expr: str,
        res: dict[str, Any],
        run: _Run,
        is_resource: bool = False,
    ) -> None:
        if not isinstance(value, dict):
            run.add("error", "structure", expr, f"{expr} must be a JSON object")
            return
        host, run.host = run.host, None
        if not is_resource:
            eid = value.get("id")
            # a str of n characters is at most 4n bytes of UTF-8: encode only when it could be too long
            if isinstance(eid, str) and len(eid) > _MAX_STRING // 4 and len(eid.encode()) > _MAX_STRING:
                run.add("error", "value", f"{expr}.id", "An element id is longer than 1 MB")
            # more than two properties: one is neither id nor resourceType (no generator to run)
            if len(value) <= 2 and not any(k != "id" and k != "resourceType" for k in value):
                # ele-1 sits on elements; a resource with only resourceType (and id) is valid
                run.add("error", "invariant", expr, "ele-1: All FHIR elements must have a @value or children")
                return
        children = elem.children
        plain_keys = self._plain_keys.get(elem)
        if plain_keys is None:
            plain_keys = self._plain_keys[elem] = self._plain_single(elem)
        # child element -> its (JSON name, type, value)s, in the order the names first occur (Elem
        # compares by identity); an empty list: only ``_name`` is there, or a plain value that passed
        # its type check (nothing left to do for it)
        present: dict[Elem, list[tuple[str, TypeRef | None, Any]]] = {}
        for key, item in value.items():
            plain_key = plain_keys.get(key)
            if plain_key is not None and plain_key[1](item):
                # a valid single plain value: no issue, so checking it here keeps the order of issues
                present[plain_key[0]] = []
                continue
            found = children.get(key)
            if found is not None:
                child, tref = found
                got = present.get(child)
                if got is None:
                    present[child] = [(key, tref, item)]
                else:
                    got.append((key, tref, item))
                continue
            if key == "resourceType" and is_resource:
                continue
            if key[:1] == "_":
                if is_resource and key == "_id":
                    continue  # reported by _resource_rules
                self._primitive_extras(value, key, item, elem, expr, res, run, type_path)
                found_primitive = children.get(key[1:])
                if found_primitive is not None and key[1:] not in value:
                    # a primitive given only by its extensions (``_birthDate``) is present
                    present.setdefault(found_primitive[0], [])
                continue
            run.add("error", "structure", f"{expr}.{key}", f"Unrecognized property '{key}'")
        for child, got in present.items():
            if not got:
                continue  # only ``_name``: its extensions stand for the value
            items: list[tuple[Any, str, TypeRef | None]]
            if len(got) == 1:
                key, tref, item = got[0]
                if not child.sliced and not isinstance(item, list) and not child.repeats:
                    # one single value, the common case: its expression is built only when used
                    if child.min > 1 or (child.max is not None and child.max < 1):
                        self._cardinality(child, 1, f"{expr}.{key}", run)
                    plain = self._plain.get(child, _UNSET)
                    if plain is _UNSET:
                        plain = self._plain[child] = self._plain_check(child)
                    if plain is None or not plain(item):
                        self._value(item, child, tref, f"{expr}.{key}", res, run)
                    continue
                if isinstance(item, list) or child.repeats:
                    items = self._items(item, child, key, tref, f"{expr}.{key}", run)
                else:
                    items = [(item, f"{expr}.{key}", tref)]
            else:
                names = ", ".join(k for k, _, _ in got)
                run.add("error", "structure", f"{expr}.{child.name}", f"Only one of {names} is allowed")
                items = []
                for key, tref, item in got:
                    items.extend(self._items(item, child, key, tref, f"{expr}.{key}", run))
            count = len(items)
            if count < child.min or (child.max is not None and count > child.max):
                self._cardinality(child, count, f"{expr}.{got[0][0]}", run)
            if child.sliced:
                self._sliced(items, child, res, run, host)
                continue
            plain = self._plain.get(child, _UNSET)
            if plain is _UNSET:
                plain = self._plain[child] = self._plain_check(child)
            for item, item_expr, tref in items:
                if plain is None or not plain(item):  # a valid plain value: all _value would do
                    self._value(item, child, tref, item_expr, res, run)
        for child in elem.required:
            if child not in present:
                self._cardinality(child, 0, f"{expr}.{child.name}", run)
                if child.sliced:
                    self._sliced([], child, res, run, host)
        if elem.checks:
            self._invariants(value, elem.checks, type_path, expr, res, run)

    @staticmethod
    def _items(
        item: Any, child: Elem, key: str, tref: TypeRef | None, expr: str, run: _Run
    ) -> list[tuple[Any, str, TypeRef | None]]:
        if isinstance(item, list):
            if not child.repeats:
                run.add("error", "structure", expr, f"{key} must be a single value, not an array")
                return [(v, f"{expr}[{i}]", tref) for i, v in enumerate(item)]
            if not item:
                run.add("error", "structure", expr, "Array cannot be empty: leave the property out")
            return [(v, f"{expr}[{i}]", tref) for i, v in enumerate(item)]
        if child.repeats:
            run.add("error", "structure", expr, f"{key} must be an array")
        return [(item, expr, tref)]

    @staticmethod
    def _cardinality(elem: Elem, count: int, expr: str, run: _Run) -> None:
        where = f" (slice '{elem.slice_name}')" if elem.slice_name else ""
        if count < elem.min:
            run.add(
                "error", "required", expr, f"{elem.path}{where}: minimum required = {elem.min}, found {count}"
            )
        if elem.max is not None and count > elem.max:
            run.add(
                "error", "structure", expr, f"{elem.path}{where}: maximum allowed = {elem.max}, found {count}"
            )

    def _primitive_extras(
        self,
        value: dict[str, Any],
        key: str,
        item: Any,
        elem: Elem,
        expr: str,
        res: dict[str, Any],
        run: _Run,
        type_path: str = "",
    ) -> None:
        """``_birthDate``: the id and extensions of a primitive, validated as an Element."""
        found = elem.children.get(key[1:])
        element = self.root(CORE + "Element")
        if found is None or element is None:
            run.add("error", "structure", expr, f"Unrecognized property '{key}'")
            return
        for i, part in enumerate(item if isinstance(item, list) else [item]):
            if part is not None:
                where = f"{expr}.{key[1:]}[{i}]" if isinstance(item, list) else f"{expr}.{key[1:]}"
                run.host = (found[0].path, f"{type_path}.{key[1:]}")
                self._complex(part, element, "Element", where, res, run)
                run.host = None

    # ---- one value of an element -------------------------------------------------------------------

    def _value(
        self, item: Any, elem: Elem, tref: TypeRef | None, expr: str, res: dict[str, Any], run: _Run
    ) -> None:
        if tref is None and len(elem.types) > 1 and isinstance(item, dict) and "resourceType" in item:
            tref = next((t for t in elem.types if t.code == item["resourceType"]), None)
        code = tref.code if tref is not None else (elem.types[0].code if elem.types else "")
        kind = self._kinds.get(code)
        if kind is None:
            kind = self._kinds[code] = self._kind(code)
        check, is_resource = kind
        if check is not None:
            if check(item):
                if elem.fixed_or_pattern:
                    self._fixed_pattern(item, elem, expr, run)
                if elem.limited:
                    run.context += 1  # a limit may be relative to today
                    _limits(item, elem, expr, run)
                if code == "code":
                    if elem.binding:
                        self._binding(item, code, elem, expr, run)
                    for url in elem.also_required:
                        self._binding(item, code, elem, expr, run, ("required", url))
                if elem.checks:
                    self._invariants(item, elem.checks, code, expr, res, run)
            else:
                run.add("error", "value", expr, f"The value {_show(item)} is not a valid {code}")
            return
        if is_resource:
            rtype = item.get("resourceType") if isinstance(item, dict) else None
            wanted = tuple(
                p
                for p in (tref.profiles if tref is not None else ())
                if code != "Resource" or self.type_of(p) == rtype
            )
            if len(wanted) > 1 and isinstance(item, dict):
                # R4 ElementDefinition.type.profile: "the resource SHALL conform to at least one profile"
                fits = [p for p in wanted if self._conforms(item, p, run)]
                wanted = tuple(fits[:1]) or wanted[:1]
            if code != "Resource" and isinstance(item, dict) and item.get("resourceType") != code:
                run.add("error", "structure", expr, f"Expected a {code}, found {item.get('resourceType')}")
            self._resource(item, expr, wanted, run, contained=elem.path.endswith(".contained"))
            return
        if not isinstance(item, dict):
            run.add("error", "structure", expr, f"{expr} must be a JSON object")
            return
        if code in _BACKBONE or not self.memo:
            walked = self._complex_value(item, elem, tref, code, code not in _BACKBONE, expr, res, run)
            if walked and code == "Reference":
                self._reference(item, tref, expr, run)
            return
        # repr, not a JSON dump: it keeps apart what JSON would merge (tuple and list, NaN and null)
        text = repr(item)
        key = (elem, tref, self.native, text)
        if key in self._clean:
            if code == "Reference":
                self._reference(item, tref, expr, run)
            return
        issues, context = len(run.issues), run.context
        walked = self._complex_value(item, elem, tref, code, True, expr, res, run)
        if len(run.issues) == issues and run.context == context and len(text) <= _CLEAN_MAX_REPR:
            if len(self._clean) >= _CLEAN_LIMIT:
                self._clean.clear()
            self._clean[key] = True
        if walked and code == "Reference":
            # last of a Reference's checks, kept out of the memo: it resolves in the Bundle
            self._reference(item, tref, expr, run)

    def _complex_value(
        self,
        item: dict[str, Any],
        elem: Elem,
        tref: TypeRef | None,
        code: str,
        datatype: bool,
        expr: str,
        res: dict[str, Any],
        run: _Run,
    ) -> bool:
        """A value of a complex type or a backbone element: its children, then the type's checks but
        the target of a Reference (the caller's, after this). False: of an unknown type."""
        profiles = (
            [r for r in (self.root(p) for p in tref.profiles) if r is not None]
            if tref is not None and tref.profiles
            else None
        )
        type_root = self._type_root(code) if datatype else None
        if profiles:
            for root in profiles:
                self._complex(item, root, code, expr, res, run)
        elif elem.own:
            self._complex(item, elem, code if datatype else (elem.content_ref or elem.path), expr, res, run)
            if type_root is not None and type_root.checks:
                self._invariants(item, type_root.checks, code, expr, res, run)
        elif type_root is not None:
            self._complex(item, type_root, code, expr, res, run)
        else:
            run.add("error", "structure", expr, f"Unknown data type '{code}'")
            return False
        if not elem.own and elem.checks:
            self._invariants(item, elem.checks, code, expr, res, run)
        if elem.fixed_or_pattern:
            self._fixed_pattern(item, elem, expr, run)
        if code == "Coding":
            self._coding(item, expr, run)
        elif code == "CodeableConcept":
            for i, coding in enumerate(
                item.get("coding", []) if isinstance(item.get("coding"), list) else []
            ):
                if isinstance(coding, dict):
                    self._coding(coding, f"{expr}.coding[{i}]", run)
        elif code == "Attachment":
            _attachment_size(item, expr, run)
        elif code == "Quantity" and elem.limited:
            run.context += 1  # a limit may be relative to today
            _limits(item, elem, expr, run)
        if elem.binding and code in ("Coding", "CodeableConcept", "Quantity"):
            self._binding(item, code, elem, expr, run)
        for url in elem.also_required if code in ("Coding", "CodeableConcept") else ():
            self._binding(item, code, elem, expr, run, ("required", url))
        return True

    def _plain_single(self, elem: Elem) -> dict[str, tuple[Elem, Callable[[Any], bool]]]:
        """JSON name -> (child, type check) of ``elem``'s children that take one value (not sliced, not
        repeating, one allowed) of a plain type (``_plain_check``): a value that passes the check is
        all ``_complex`` would do for it (a list never passes a primitive check). A plain type is
        never a choice, so no other name reaches the child."""
        table = {}
        for key, (child, _tref) in elem.children.items():
            if child.sliced or child.repeats or child.min > 1 or (child.max is not None and child.max < 1):
                continue
            plain = self._plain.get(child, _UNSET)
            if plain is _UNSET:
                plain = self._plain[child] = self._plain_check(child)
            if plain is not None:
                table[key] = (child, plain)
        return table

    def _plain_check(self, elem: Elem) -> Callable[[Any], bool] | None:
        """The type check of a child whose valid values ``_value`` would only type-check: one primitive
        type (not a choice, so its ``TypeRef`` is that type), no fixed/pattern, min/max, binding or
        invariant (``ele-1`` aside). None: its values go through ``_value``."""
        if elem.choice or len(elem.types) != 1 or elem.fixed_or_pattern or elem.limited or elem.checks:
            return None
        code = elem.types[0].code
        if code not in PRIMITIVE_TYPES or (code == "code" and (elem.binding or elem.also_required)):
            return None
        check = self._primitive_checks.get(code)
        if check is None:
            check = self._primitive_checks[code] = self._primitive_check(code)
        return check

    def _type_root(self, code: str) -> Elem | None:
        """``root(CORE + code)``, looked up once per type code."""
        if code not in self._type_roots:
            self._type_roots[code] = self.root(CORE + code)
        return self._type_roots[code]

    def _kind(self, code: str) -> tuple[Callable[[Any], bool] | None, bool]:
        """What ``_value`` does with a value of type ``code``, the same for every value: its primitive
        check (None: not a primitive type), and whether it is a resource (``Resource`` or a resource
        type)."""
        check = self._primitive_checks.get(code)
        if check is None and code in PRIMITIVE_TYPES:
            check = self._primitive_checks[code] = self._primitive_check(code)
        return check, check is None and (code == "Resource" or self._is_resource_type(code))

    def _is_resource_type(self, code: str) -> bool:
        known = self._resource_types.get(code)
        if known is None:
            sd = self.defs.structure(CORE + code) if code and code[0].isupper() else None
            known = self._resource_types[code] = sd is not None and sd.get("kind") == "resource"
        return known

    def _primitive_check(self, code: str) -> Callable[[Any], bool]:
        """The test of a JSON value of the primitive type ``code``, built once per type: JSON type, the
        value regex of the type's definition, a real calendar day for dates."""
        if code == "boolean":
            return lambda item: isinstance(item, bool)
        if code in _INTEGERS:
            low = _INTEGERS[code]
            return lambda item: (
                isinstance(item, int) and not isinstance(item, bool) and (low is None or item >= low)
            )
        if code == "decimal":
            return lambda item: isinstance(item, int | float) and not isinstance(item, bool)
        regex = self._primitive_regex(code) if code != "xhtml" else None
        match = regex.fullmatch if regex is not None else None
        calendar = code in _CALENDAR

        def check(item: Any) -> bool:
            if not isinstance(item, str) or item.strip() == "":
                return False
            if match is not None and match(item) is None:
                return False
            return not calendar or _real_date(item)

        return check

    def _primitive_regex(self, code: str) -> re.Pattern[str] | None:
        if code not in self._regex:
            sd = self.defs.structure(CORE + code)
            self._regex[code] = primitive_regex(sd) if sd else None
        return self._regex[code]

    # ---- slices ------------------------------------------------------------------------------------

    def _sliced(
        self,
        items: list[tuple[Any, str, TypeRef | None]],
        elem: Elem,
        res: dict[str, Any],
        run: _Run,
        host: tuple[str, ...] | None = None,
    ) -> None:
        slicing = elem.slicing or {}
        matched: dict[int, list[tuple[Any, str, TypeRef | None]]] = {id(s): [] for s in elem.slices}
        by_url = self._url_index.get(elem, _UNSET)
        if by_url is _UNSET:
            by_url = self._url_index[elem] = self._slices_by_url(elem, slicing)
        for item, item_expr, tref in items:
            if by_url is None:
                target = next((s for s in elem.slices if self._matches(item, s, slicing, run)), None)
            else:  # what ``_matches`` finds first, looked up (a url that is not a str matches no slice)
                url = item.get("url") if isinstance(item, dict) else _UNSET
                target = by_url.get(url) if url is None or isinstance(url, str) else None
            if elem.name in _EXTENSIONS and isinstance(item, dict):
                self._modifier_place(item, elem, item_expr, run)
            if target is not None:
                matched[id(target)].append((item, item_expr, tref))
                self._value(
                    item, target, target.types[0] if len(target.types) == 1 else tref, item_expr, res, run
                )
            elif slicing.get("rules") == "closed":
                run.add(
                    "error", "structure", item_expr, f"{elem.path}: this element does not match any slice"
                )
            elif elem.name in _EXTENSIONS and isinstance(item, dict):
                self._unsliced_extension(item, elem, tref, item_expr, res, run, host)
            else:
                self._value(item, elem, tref, item_expr, res, run)
        for s in elem.slices:
            got = matched[id(s)]
            beyond = got[s.max][1] if s.max is not None and len(got) > s.max else None
            self._cardinality(s, len(got), beyond or (got[0][1] if got else _parent(items, elem)), run)

    def _modifier_place(self, item: dict[str, Any], elem: Elem, expr: str, run: _Run) -> None:
        """An extension whose definition says it is a modifier (the root element's ``isModifier``) goes
        under ``modifierExtension``, any other under ``extension`` (R4 extensibility.html: "modifier
        extensions SHALL NOT be included in extension"): a reader that ignores ``extension`` would
        otherwise take the bound for the value (Clavien-Dindo ``< IIIa`` read as ``IIIa``)."""
        url = item.get("url")
        modifier = self._is_modifier(url) if isinstance(url, str) else None
        if modifier is None:
            return
        if modifier and elem.name == "extension":
            message = f"Extension {url} must not be used as an extension (it's a modifierExtension)"
            run.add("error", "structure", expr, message)
        elif not modifier and elem.name == "modifierExtension":
            message = f"Extension {url} must not be used as a modifierExtension (it's not a modifier)"
            run.add("error", "structure", expr, message)

    def _is_modifier(self, url: str) -> bool | None:
        """Whether the extension's definition marks it a modifier; None when no definition is loaded."""
        url = url.split("|", 1)[0]
        if url not in self._modifiers:
            elements = self.snapshots.get(url)
            if elements is None:
                sd = self.defs.structure(url)
                if sd is None or sd.get("type") != "Extension":
                    self._modifiers[url] = None
                    return None
                elements = (sd.get("snapshot") or sd.get("differential") or {}).get("element", [])
            first = next((e for e in elements if e.get("path") == "Extension"), {})
            self._modifiers[url] = bool(first.get("isModifier", False))
        return self._modifiers[url]

    def _unsliced_extension(
        self,
        item: dict[str, Any],
        elem: Elem,
        tref: TypeRef | None,
        expr: str,
        res: dict[str, Any],
        run: _Run,
        host: tuple[str, ...] | None = None,
    ) -> None:
        url = item.get("url")
        root = self.root(url) if isinstance(url, str) else None
        if root is None:
            if elem.name == "modifierExtension":
                run.add("error", "structure", expr, f"Unknown modifier extension {url}")
            elif self.own_canonical and isinstance(url, str) and url.startswith(self.own_canonical):
                run.add(
                    "warning",
                    "not-found",
                    expr,
                    f"Extension {url} of this project is not defined in profiles/",
                )
            else:
                run.add("information", "informational", expr, f"Unknown extension {url}")
            self._value(item, elem, tref, expr, res, run)
            return
        hosts = host or (elem.path.rsplit(".", 1)[0],)
        if not any(self._in_context(str(url), h) for h in hosts):
            run.add("error", "structure", expr, f"The extension {url} is not allowed on {hosts[0]}")
        self._complex(item, root, "Extension", expr, res, run)

    def _in_context(self, url: str, host: str) -> bool:
        """Is the extension allowed on an element with this (base) path? Its ``context`` says."""
        sd = self.defs.structure(url) or {}
        contexts = [c.get("expression") for c in sd.get("context", []) if c.get("type") == "element"]
        if not contexts:
            return True
        # the contexts hl7.fhir.uv.extensions added to a base R4 extension (newer.json), as the
        # reference validator reads core extensions from that package
        contexts += self.defs.newer.contexts_for(sd)
        rtype = host.split(".", 1)[0]
        resource_like = {"Element", "Resource", "DomainResource"}
        if "." not in host and self._canonical_resource(rtype):
            resource_like = {*resource_like, "CanonicalResource", "MetadataResource"}
        return any(c == host or c in resource_like or (c == rtype and "." not in host) for c in contexts)

    def _canonical_resource(self, rtype: str) -> bool:
        """R5's ``CanonicalResource`` (a context used by newer extensions) in R4 terms: a resource with
        ``url``, ``version`` and ``status``."""
        root = self.root(CORE + rtype)
        return root is not None and all(k in root.children for k in ("url", "version", "status"))

    def _slices_by_url(self, elem: Elem, slicing: dict[str, Any]) -> dict[str | None, Elem] | None:
        """Slices told apart by ``url`` alone (extensions): each slice's URL -> the first slice with
        it, which is the one ``_matches`` would find first for an item with that ``url``. None: other
        discriminators, matched one slice at a time."""
        discriminators = slicing.get("discriminator", [])
        if not isinstance(discriminators, list) or len(discriminators) != 1:
            return None
        disc = discriminators[0]
        if not isinstance(disc, dict) or disc.get("path") not in ("url", "$this.url"):
            return None
        index: dict[str | None, Elem] = {}
        for s in elem.slices:
            url = self._slice_urls.get(s, _UNSET)
            if url is _UNSET:
                url = self._slice_urls[s] = _slice_url(s)
            index.setdefault(url, s)
        return index

    def _matches(self, item: Any, s: Elem, slicing: dict[str, Any], run: _Run) -> bool:
        if not isinstance(item, dict):
            return False
        for disc in slicing.get("discriminator", []):
            path, kind = disc.get("path"), disc.get("type")
            if isinstance(path, str) and path.startswith("$this."):
                path = path[len("$this.") :]
            if path == "$this" and kind in ("value", "pattern"):
                whole = s.fixed if s.fixed is not None else s.pattern
                if whole is not None and not _pattern_match(item, whole):
                    return False
                continue
            if path == "url":
                url = self._slice_urls.get(s, _UNSET)
                if url is _UNSET:
                    url = self._slice_urls[s] = _slice_url(s)
                if item.get("url") != url:
                    return False
            elif kind in ("value", "pattern") and isinstance(path, str) and "." not in path:
                child = s.children.get(path)
                want = (child[0].fixed or child[0].pattern) if child else None
                whole = s.fixed or s.pattern
                if want is None and isinstance(whole, dict):
                    want = whole.get(path)
                if want is None:
                    continue  # the slice leaves this discriminator open (the reference matches it)
                got = item.get(path)
                if isinstance(got, list) and not isinstance(want, list):
                    if not any(_pattern_match(g, want) for g in got):
                        return False
                elif not _pattern_match(got, want):
                    return False
            elif kind in ("type", "profile") and isinstance(path, str) and path.isidentifier():
                child = s.children.get(path)
                value = item.get(path)
                if child is None or not isinstance(value, dict):
                    return False
                types = child[0].types
                if kind == "type" and value.get("resourceType") not in {t.code for t in types}:
                    return False
                if kind == "profile" and not any(
                    value.get("resourceType") == t.code
                    and any(self._conforms(value, p, run) for p in t.profiles)
                    for t in types
                ):
                    return False
            else:
                return False
        return True

    # ---- fixed, pattern, codes, references, invariants -------------------------------------------------

    @staticmethod
    def _fixed_pattern(item: Any, elem: Elem, expr: str, run: _Run) -> None:
        if elem.fixed is not None and not _equal(item, elem.fixed):
            run.add("error", "value", expr, f"Value must be exactly {_show(elem.fixed)}, found {_show(item)}")
        if elem.pattern is not None and not _pattern_match(item, elem.pattern):
            run.add(
                "error",
                "value",
                expr,
                f"Value must match the pattern {_show(elem.pattern)}, found {_show(item)}",
            )

    def _coding(self, coding: dict[str, Any], expr: str, run: _Run) -> None:
        system, code = coding.get("system"), coding.get("code")
        checkable = isinstance(system, str) and isinstance(code, str)
        if not checkable:
            return
        known = self.terminology.code_known(str(system), str(code))
        if known is False:
            run.add("error", "code-invalid", expr, f"Unknown code '{code}' in the CodeSystem '{system}'")
        elif known and (source := self.terminology.newer_source(str(system), str(code))) is not None:
            run.add(
                "information",
                "informational",
                expr,
                f"Code '{code}' is not in R4 4.0.1's CodeSystem '{system}'; accepted from {source}",
            )

    def _binding(
        self, item: Any, code: str, elem: Elem, expr: str, run: _Run, binding: tuple[str, str] | None = None
    ) -> None:
        binding = binding or elem.binding
        assert binding is not None
        strength, url = binding
        if strength not in ("required", "extensible"):
            return
        severity = "error" if strength == "required" else "warning"
        expansion = self.terminology.expansion(url)
        if expansion is None:
            run.add("warning", "not-found", expr, f"ValueSet {url} is unknown; the code was not checked")
            return
        if code == "code":
            if expansion.contains(None, item) is False:
                run.add(severity, "code-invalid", expr, f"The code '{item}' is not in the value set {url}")
            return
        codings = [item] if code in ("Coding", "Quantity") else item.get("coding", [])
        codings = [c for c in codings if isinstance(c, dict)] if isinstance(codings, list) else []
        # a system that is not a string is reported by its type check; it cannot be looked up
        codings = [c for c in codings if isinstance(c.get("system"), str | None)]
        found = [expansion.contains(c.get("system"), str(c.get("code"))) for c in codings if "code" in c]
        if any(f is not False for f in found):
            return
        if not found:
            run.add(severity, "code-invalid", expr, f"No code provided, and a code from {url} is {strength}")
        else:
            shown = ", ".join(f"{c.get('system')}#{c.get('code')}" for c in codings)
            run.add(
                severity, "code-invalid", expr, f"None of the codings ({shown}) are in the value set {url}"
            )

    def _reference(self, item: dict[str, Any], tref: TypeRef | None, expr: str, run: _Run) -> None:
        run.context += 1  # resolves in the Bundle
        ref = item.get("reference")
        if isinstance(ref, str) and run.bundle is not None and not run.history:
            _bundle_reference(ref, expr, run)
            if tref is not None and _bundled_only(tref.aggregation, ref) and self._resolve(ref, run) is None:
                run.add(
                    "error",
                    "structure",
                    expr,
                    f"Bundled or contained reference not found within the bundle/resource {ref}",
                )
        if not isinstance(ref, str) or tref is None or not tref.targets:
            return
        known = self._targets.get(id(tref))
        if known is None or known[0] is not tref:
            allowed = {t: self.type_of(t) for t in tref.targets}
            known = self._targets[id(tref)] = (tref, allowed, {t for t in allowed.values() if t})
        _, allowed, types = known
        if "Resource" in types:
            return
        target = self._resolve(ref, run)
        if target is None:
            literal = _LITERAL_REF.match(ref)
            if literal and literal.group(1) not in types:
                run.add("warning", "structure", expr, f"Reference {ref} is not to one of {sorted(types)}")
            return
        ttype = target.get("resourceType")
        if ttype not in types:
            run.add(
                "error",
                "structure",
                expr,
                f"Invalid Resource target type. Found {ttype}, expected {sorted(types)}",
            )
            return
        wanted = [u for u, t in allowed.items() if t == ttype and not u.startswith(CORE)]
        if wanted and not any(self._conforms(target, u, run) for u in wanted):
            run.add(
                "error",
                "structure",
                expr,
                f"The referenced {ttype} does not conform to {' or '.join(wanted)}",
            )

    def _resolve(self, ref: str, run: _Run) -> dict[str, Any] | None:
        if run.bundle is None:
            return None
        found = run.bundle.get(ref)
        if found is None and _LITERAL_REF.match(ref):
            found = next((r for u, r in run.bundle.items() if u.endswith("/" + ref)), None)
        return found

    def _conforms(self, target: dict[str, Any], profile: str, run: _Run) -> bool:
        run.context += 1
        if profile in _declared_profiles(target):
            return True  # checked against it as an entry of its own
        key = (id(target), profile)
        if key not in run.conforms:
            run.conforms[key] = not any(
                i.severity in ("error", "fatal") for i in self.validate(target, [profile])
            )
        return run.conforms[key]

    def _invariants(
        self,
        node: Any,
        constraints: tuple[Constraint, ...],
        type_path: str,
        expr: str,
        res: dict[str, Any],
        run: _Run,
    ) -> None:
        root = run.root if run.root is not None else res
        planned = self._plans.get(id(constraints))
        if planned is None or planned[0] is not constraints:
            planned = self._plans[id(constraints)] = (constraints, _plan_checks(constraints))
        is_dict = isinstance(node, dict)
        for c, vacuous, always, native, native_type, reads, absent in planned[1]:
            if vacuous and is_dict and _vacuous(c.key, node):
                continue
            if absent is not None and is_dict and self.decide:
                # decided by a name being absent (``_absent_plan``)
                decided = _decided(absent, node)
                if decided is not None and c.expression not in self.invariants.unsupported:
                    if reads:
                        run.context += 1
                    if not decided:
                        severity = "error" if c.severity == "error" else "warning"
                        run.add(severity, "invariant", expr, f"Constraint failed: {c.key}: '{c.human}'")
                    continue
            verdict = always(node, root) if always is not None else None
            if verdict is not None or reads:
                run.context += 1  # may read the root resource or the resource
            if (
                verdict is None
                and native is not None
                and self.native
                and is_dict
                and (native_type is None or native_type == type_path)
            ):
                verdict = native(node)
            if verdict is None:
                verdict = self.invariants.holds(c.expression, node, type_path, res, root)
            if verdict is None and c.expression in self.invariants.unsupported:
                run.add(
                    "information",
                    "informational",
                    expr,
                    f"Constraint {c.key} not evaluated: the FHIRPath engine cannot ({c.expression})",
                )
            if verdict is False:
                severity = "error" if c.severity == "error" else "warning"
                run.add(severity, "invariant", expr, f"Constraint failed: {c.key}: '{c.human}'")


# ---- helpers ---------------------------------------------------------------------------------------

_CONTAINED_RULES = frozenset({"dom-2", "dom-3", "dom-4", "dom-5"})
"""Base R4 invariants that only constrain ``contained`` resources."""


_Absent = tuple[tuple[str, bool], ...]
_Planned = tuple[Constraint, bool, RootCheck | None, Check | None, str | None, bool, _Absent | None]
_UNSET: Any = object()


def _plan_checks(constraints: Sequence[Constraint]) -> list[_Planned]:
    """Per invariant, what ``_invariants`` would otherwise look up on every value: whether it can be
    vacuous (``_vacuous``), its ``native.ALWAYS`` and ``native.CHECKS`` forms (with the type path the
    latter is written for, if any), and whether it reads beyond the value (``%`` variables,
    ``resolve()``). ``ele-1`` is left out (checked structurally)."""
    return [
        (
            c,
            c.key == "ref-1" or c.key in _CONTAINED_RULES,
            ALWAYS.get((c.key, c.expression)),
            CHECKS.get((c.key, c.expression)),
            TYPE_PATHS.get((c.key, c.expression)),
            "%" in c.expression or "resolve(" in c.expression,
            _absent_plan(c.expression),
        )
        for c in constraints
        if c.key != _STRUCTURAL
    ]


_EMPTY_OR = re.compile(r"([a-z][A-Za-z0-9]*)\.empty\(\) or (.+)", re.S)
_EXISTS_IMPLIES = re.compile(r"([a-z][A-Za-z0-9]*)\.exists\(\) implies (.+)", re.S)
_STEP = r"\.(?:[A-Za-z][A-Za-z0-9]*|`[A-Za-z][A-Za-z0-9]*`)"
_PATH_EXISTS = re.compile(rf"([a-z][A-Za-z0-9]*)(?:{_STEP})*\.exists\(\)")
_LOOSER = re.compile(r"\b(?:implies|xor)\b")
_LITERALS = frozenset({"true", "false"})
_NAME_STEP = re.compile(r"[a-z][A-Za-z0-9]*")


def _absent_plan(expression: str) -> _Absent | None:
    """An invariant whose verdict is known when a name it starts a path with reaches nothing in the
    value: (name, verdict) pairs, or None. A name reaches a JSON property equal to it, its ``_`` form,
    or (a choice) one that starts with it, so a value with no property that starts with the name
    (``_`` stripped) gives that step no input and the path is empty. FHIRPath then decides by its own
    terms:

    - ``name.empty() or X``: "true or X" is true whatever X is (R4 FHIRPath ``or``: "Returns true if
      either operand evaluates to true"), unless X holds an operator that binds looser than ``or``
      (``xor`` binds alike and associates left, ``implies`` looser): then none is taken;
    - ``X or name.a.where(...).empty()`` (the last operand of ``or`` at the top level): member steps
      and ``where`` on an empty collection are empty, so ``empty()`` is true and so is the ``or``,
      and any looser ``implies`` around it ("true if the right operand is true");
    - ``name.exists() implies X``: "If the left operand evaluates to false, the operator returns
      true" (``implies`` associates left, so a second one is refused);
    - ``name.a.b.exists()``: a path from nothing is empty, so ``exists()`` is false."""
    found: list[tuple[str, bool]] = []
    for pattern in (_EMPTY_OR, _EXISTS_IMPLIES):
        match = pattern.fullmatch(expression)
        if match is not None and not _LOOSER.search(match.group(2)) and match.group(1) not in _LITERALS:
            found.append((match.group(1), True))
    match = _PATH_EXISTS.fullmatch(expression)
    if match is not None and match.group(1) not in _LITERALS:
        found.append((match.group(1), False))
    last = _last_or_empty(expression)
    if last is not None and last not in _LITERALS:
        found.append((last, True))
    return tuple(found) or None


def _last_or_empty(expression: str) -> str | None:
    """``name`` when ``expression`` ends in `` or name(.member|.where(...))*.empty()`` with that ``or``
    outside any parentheses and string; else None."""
    suffix = ".empty()"
    if not expression.endswith(suffix):
        return None
    depth, quoted, cut = 0, False, -1
    for i, ch in enumerate(expression):
        if quoted:
            quoted = ch != "'"
        elif ch == "'":
            quoted = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and expression.startswith(" or ", i):
            cut = i + 4
    if cut < 0 or depth != 0 or quoted:
        return None
    tail = expression[cut : -len(suffix)]
    name = _NAME_STEP.match(tail)
    if name is None or "'" in tail:
        return None
    rest = tail[name.end() :]
    while rest:
        step = _NAME_STEP.match(rest[1:]) if rest[0] == "." else None
        if step is not None and not rest[1:].startswith("where("):
            rest = rest[1 + step.end() :]
            continue
        if not rest.startswith(".where("):
            return None
        depth, end = 0, -1
        for i, ch in enumerate(rest):
            depth += (ch == "(") - (ch == ")")
            if ch == ")" and depth == 0:
                end = i
                break
        if end < 0:
            return None
        rest = rest[end + 1 :]
    return name.group(0)


def _decided(absent: _Absent, node: dict[str, Any]) -> bool | None:
    """The verdict of the first (name, verdict) of ``_absent_plan`` whose name reaches nothing: no
    property starts with the name or ``_`` and the name (a NUL inside a key can only make a name
    look present, so undecided)."""
    keys = "\0" + "\0".join(node)
    for name, verdict in absent:
        if "\0" + name not in keys and "\0_" + name not in keys:
            return verdict
    return None


def _vacuous(key: str, node: Any) -> bool:
    """True when an invariant holds by its own terms, so FHIRPath need not run (it costs most of the
    time of a Bundle): ``ref-1`` speaks only of ``#`` references, ``dom-2..5`` only of contained ones."""
    if not isinstance(node, dict):
        return False
    if key == "ref-1":
        return not str(node.get("reference", "")).startswith("#")
    return key in _CONTAINED_RULES and not node.get("contained")


_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")


def _bundle_rules(bundle: dict[str, Any], expr: str, run: _Run) -> None:
    """What R4 says of Bundle.link and Bundle.entry.fullUrl that no invariant states: "The link relation
    'self' ... only one of each" (the reference validator: every relation at most once) and
    "fullUrl ... SHALL be an absolute URL" (or a urn:uuid / urn:oid)."""
    links = bundle.get("link")
    seen: set[str] = set()
    for i, link in enumerate(links if isinstance(links, list) else []):
        relation = link.get("relation") if isinstance(link, dict) else None
        if isinstance(relation, str):
            if relation in seen:
                run.add(
                    "error", "structure", f"{expr}.link[{i}]", f"The link relation '{relation}' occurs twice"
                )
            seen.add(relation)
    entries = bundle.get("entry")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if isinstance(url, str) and not _ABSOLUTE.fullmatch(url):
            run.add("error", "value", f"{expr}.entry[{i}].fullUrl", f"fullUrl {url!r} is not an absolute URL")


def _limits(item: Any, elem: Elem, expr: str, run: _Run) -> None:
    """ElementDefinition.minValue[x]/maxValue[x] on numbers, dates, times and Quantities (a Quantity
    only against a limit in the same unit: no UCUM conversion here)."""
    for limit, low in ((elem.min_value, True), (elem.max_value, False)):
        if limit is None:
            continue
        value: Any = item
        if isinstance(limit, dict) and isinstance(item, str):
            limit = _relative_limit(limit, low)  # a Duration: that long before / after now
            if limit is None:
                continue
            item_cut = item[: len(limit)] if len(item) >= 4 else item
            value, limit = item_cut, limit[: len(item_cut)]
        if isinstance(limit, dict):
            if not isinstance(item, dict):
                continue
            unit, limit_unit = item.get("code", item.get("unit")), limit.get("code", limit.get("unit"))
            scale = _ucum_scale(unit, limit_unit) if unit != limit_unit else 1.0
            if scale is None or not isinstance(item.get("value"), int | float):
                continue
            value, limit = item["value"] * scale, limit.get("value")
        if isinstance(value, bool) or isinstance(limit, bool) or value is None or limit is None:
            continue
        if isinstance(value, int | float) and isinstance(limit, int | float):
            broken = value < limit if low else value > limit
        elif isinstance(value, str) and isinstance(limit, str):
            if len(value) != len(limit) and (":" in value) != (":" in limit):
                continue
            broken = value < limit if low else value > limit
        else:
            continue
        if broken:
            word = "less than the minimum" if low else "greater than the maximum"
            run.add("error", "value", expr, f"The value {_show(value)} is {word} {_show(limit)}")


def _bundled_only(aggregation: tuple[str, ...], ref: str) -> bool:
    """A profile that allows only ``bundled`` (and perhaps ``contained``) aggregation: R4's
    resource-aggregation-mode says bundled means "The resource the reference points to will be found
    in the same bundle as the resource that includes the reference"; a ``#`` reference is contained."""
    return (
        bool(aggregation)
        and "referenced" not in aggregation
        and "bundled" in aggregation
        and not ref.startswith("#")
    )


def _bundle_reference(ref: str, expr: str, run: _Run) -> None:
    """A ``Type/id`` reference inside a Bundle must not match two entries, and a versioned one
    (``Type/id/_history/3``) that matches entries by type and id must match one of that version."""
    literal = _LITERAL_REF.match(ref)
    if literal is None or run.bundle is None:
        return
    plain = ref.split("/_history/", 1)[0]
    found = [r for u, r in run.entries if u.endswith("/" + plain)]
    if literal.group(2):
        version = ref.rsplit("/", 1)[1]
        if found and not any(
            isinstance(r.get("meta"), dict) and r["meta"].get("versionId") == version for r in found
        ):
            run.add("error", "not-found", expr, f"No entry of the Bundle is version {version} of {plain}")
    elif len(found) > 1:
        run.add("error", "structure", expr, f"Reference {ref} matches {len(found)} entries of the Bundle")


_DURATION_DAYS = {"a": 365.25, "mo": 30.4375, "wk": 7.0, "d": 1.0}


def _relative_limit(duration: dict[str, Any], low: bool) -> str | None:
    """A date limit given as a Duration (``minValueDuration``, as the reference validator reads it): the
    date that long before now (a minimum) or after now (a maximum)."""
    days = _DURATION_DAYS.get(str(duration.get("code", duration.get("unit"))))
    amount = duration.get("value")
    if days is None or not isinstance(amount, int | float) or isinstance(amount, bool):
        return None
    offset = timedelta(days=days * amount)
    today = date.today()
    return (today - offset if low else today + offset).isoformat()


_UCUM_PREFIXES = {
    "": 1.0,
    "k": 1e3,
    "h": 1e2,
    "da": 1e1,
    "d": 1e-1,
    "c": 1e-2,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
}
_UCUM_ATOMS = ("g", "L", "l", "m", "s", "mol")


def _ucum_scale(unit: Any, target: Any) -> float | None:
    """Factor from ``unit`` to ``target`` when both are one metric prefix on the same UCUM atom (g and
    kg, mL and L); None for anything else (no general UCUM conversion here)."""
    if not isinstance(unit, str) or not isinstance(target, str):
        return None
    for atom in _UCUM_ATOMS:
        if unit.endswith(atom) and target.endswith(atom):
            a, b = _UCUM_PREFIXES.get(unit[: -len(atom)]), _UCUM_PREFIXES.get(target[: -len(atom)])
            if a is not None and b is not None:
                return a / b
    return None


def _attachment_size(item: dict[str, Any], expr: str, run: _Run) -> None:
    """R4 Attachment.size: "The number of bytes of data that make up this attachment (before base64
    encoding, if that is done)" -- it must match ``data`` when both are given."""
    size, data = item.get("size"), item.get("data")
    if not isinstance(size, int) or not isinstance(data, str):
        return
    try:
        actual = len(base64.b64decode(data, validate=False))
    except (binascii.Error, ValueError):
        return
    if size != actual:
        run.add(
            "error",
            "value",
            f"{expr}.size",
            f"Stated attachment size {size} is not the size of data, {actual}",
        )


def _real_date(text: str) -> bool:
    """Is the day of a date/dateTime/instant one the calendar has (no 2020-02-30)? The R4 regex only
    bounds the day by 31."""
    if len(text) < 10:
        return True
    try:
        date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


def _slice_url(s: Elem) -> str | None:
    url = s.children.get("url")
    if url is not None and url[0].fixed is not None:
        return str(url[0].fixed)
    for t in s.types:
        if t.profiles:
            return t.profiles[0]
    return None


def _parent(items: list[tuple[Any, str, TypeRef | None]], elem: Elem) -> str:
    return items[0][1].rsplit("[", 1)[0] if items else elem.path


def _equal(value: Any, fixed: Any) -> bool:
    if isinstance(fixed, dict):
        return (
            isinstance(value, dict)
            and value.keys() == fixed.keys()
            and all(_equal(value[k], fixed[k]) for k in fixed)
        )
    if isinstance(fixed, list):
        return isinstance(value, list) and len(value) == len(fixed) and all(map(_equal, value, fixed))
    if isinstance(fixed, bool) or isinstance(value, bool):
        return value is fixed
    return bool(value == fixed)


def _pattern_match(value: Any, pattern: Any) -> bool:
    """FHIR pattern semantics: every property of the pattern is in the value; a list in the pattern
    matches when each of its items matches some item of the value's list."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and _pattern_match(value[k], v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        values = value if isinstance(value, list) else [value]
        return all(any(_pattern_match(v, p) for v in values) for p in pattern)
    return _equal(value, pattern)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _unique(issues: list[Issue]) -> list[Issue]:
    return list(dict.fromkeys(issues))


__all__ = ["Validator", "json_name"]


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _declared_profiles(resource: dict[str, Any]) -> list[Any]:
    """``meta.profile`` when it is a list (anything else is reported by the structure check)."""
    meta = resource.get("meta")
    declared = meta.get("profile") if isinstance(meta, dict) else None
    return declared if isinstance(declared, list) else []
