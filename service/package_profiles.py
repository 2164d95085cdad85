"""StructureDefinitions of the package (profiles and extensions), generated from ``mappings/case-fhir.yaml``.

The profiles are derived from the same templates the mapping engine runs, so a profile cannot
disagree with what the mapping writes: every element a template writes becomes a must-support element
of its profile, a fixed code becomes a pattern, a code table becomes a required binding to its
ValueSet, a UCUM unit becomes a Quantity pattern, ``extension(ext:x)`` becomes an extension slice
with its own Extension definition, ``component(system|code)`` becomes a component slice by pattern,
and a reference to another template's item becomes a Reference to that template's profile.

Element order and choice types come from the ``fhir.resources`` R4B models (R4B kept R4's elements
and their order for every resource type used here); only element names the templates use appear in
the differentials, and HAPI's validator checks the result against R4 4.0.1 in the integration tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.backboneelement import BackboneElement
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from marshmallow import Schema, fields

from service.codes import CANONICAL, systems, table
from service.mapping import paths
from service.mapping.spec import (
    PROFILE_PREFIX,
    Group,
    Spec,
    Template,
    case_path,
    case_tokens,
    fixed_value,
    spec,
)
from service.model.schema import CaseSchema

CORE_EXTENSION_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
# The logical model's url ends in its type name: FHIR requires an absolute type whose tail is the root path.
MODEL_URL = f"{CANONICAL}/StructureDefinition/IvcLmsCase"
MCODE_CANONICAL = "http://hl7.org/fhir/us/mcode"
# Primitive FHIR types are spelled lower-case in ElementDefinition.type.code, upper-case in choice names.
_PRIMITIVES = {
    "Boolean",
    "Integer",
    "String",
    "Decimal",
    "DateTime",
    "Date",
    "Code",
    "Uri",
    "Instant",
    "Time",
}


class ProfileError(ValueError):
    """The templates cannot be expressed as a profile; the message names the template and path."""


def type_code(suffix: str) -> str:
    """``DateTime`` (from ``valueDateTime``) -> ``dateTime``; ``Quantity`` stays."""
    return suffix[:1].lower() + suffix[1:] if suffix in _PRIMITIVES else suffix


def camel(text: str) -> str:
    words = [w for w in re.split(r"[-_\s.]+", text) if w]
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:]) if words else text


def pascal(text: str) -> str:
    c = camel(text)
    return c[:1].upper() + c[1:]


# ---- the case model: descriptions of the fields a template maps --------------------------------------


def model_field(path: str) -> fields.Field[Any] | None:
    """The marshmallow field at a case path (list indices ignored), or None."""
    schema: Schema = CaseSchema()
    found: fields.Field[Any] | None = None
    for token in case_tokens(path):
        if isinstance(token, int) or token == "*":
            continue
        if found is not None:
            schema_of = nested_schema(found)
            if schema_of is None:
                return None
            schema = schema_of
        found = schema.fields.get(token)
        if found is None:
            return None
    return found


def nested_schema(f: fields.Field[Any]) -> Schema | None:
    """The schema of a Nested field or of a list of Nested, else None."""
    if isinstance(f, fields.List):
        f = f.inner
    if isinstance(f, fields.Nested):
        nested = f.schema
        return nested if isinstance(nested, Schema) else None
    return None


def describe(path: str) -> str:
    f = model_field(path)
    return str(f.metadata.get("description", "")) if f is not None else ""


# ---- element tree ------------------------------------------------------------------------------------


@dataclass
class Element:
    """One ElementDefinition of a differential, with the key that puts it in base order."""

    id: str
    path: str
    key: tuple[Any, ...]
    data: dict[str, Any] = field(default_factory=dict)
    types: list[dict[str, Any]] = field(default_factory=list)
    maps: list[str] = field(default_factory=list)

    def set(self, name: str, value: Any, where: str) -> None:
        if name in self.data and self.data[name] != value:
            raise ProfileError(f"{where}: {self.id}.{name} set to {self.data[name]!r} and {value!r}")
        self.data[name] = value

    def add_type(self, entry: dict[str, Any]) -> None:
        same = next((t for t in self.types if t["code"] == entry["code"]), None)
        if same is None:
            self.types.append(entry)
            return
        for k in ("profile", "targetProfile"):
            for url in entry.get(k, []):
                if url not in same.setdefault(k, []):
                    same[k].append(url)

    def as_fhir(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "path": self.path}
        if ":" in self.id.rsplit(".", 1)[-1]:
            out["sliceName"] = self.id.rsplit(":", 1)[-1]
        order = ("slicing", "short", "definition", "comment", "min", "max")
        out.update({k: self.data[k] for k in order if k in self.data})
        if self.types:
            out["type"] = self.types
        out.update({k: v for k, v in self.data.items() if k not in order})
        if self.maps:
            out["mapping"] = [{"identity": "ivclms-case", "map": m} for m in self.maps]
        return out


@dataclass(frozen=True)
class Usage:
    """What the mapping puts at the end of a path: a field's converter, a fixed value or a reference."""

    case_paths: tuple[str, ...] = ()
    kind: str = ""
    arg: str | None = None
    fixed: Any = None
    targets: tuple[str, ...] = ()
    required: bool = False
    conditional: bool = False


@dataclass
class ExtensionUse:
    url: str
    context: str
    rest: tuple[paths.Step, ...]
    usage: Usage
    where: str
    modifier: bool = False


@dataclass
class Builder:
    """Differential of one profile; extension uses are collected for the Extension definitions."""

    template: str
    resource_type: str
    elements: dict[str, Element] = field(default_factory=dict)
    extensions: list[ExtensionUse] = field(default_factory=list)
    foreign: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def element(self, eid: str, path: str, key: tuple[Any, ...]) -> Element:
        if eid not in self.elements:
            self.elements[eid] = Element(eid, path, key)
        return self.elements[eid]

    def put(self, steps: Iterable[paths.Step], usage: Usage) -> None:
        self._walk(self.resource_type, self.resource_type, (), _model(self.resource_type), list(steps), usage)

    def _walk(
        self, eid: str, path: str, key: tuple[Any, ...], model: Model, steps: list[paths.Step], usage: Usage
    ) -> None:
        step, rest = steps[0], steps[1:]
        where = f"{self.template}: {usage.case_paths[0] if usage.case_paths else step.name}"
        order = model.elements_sequence()
        if step.url is not None:
            self._extension(eid, path, key, order, step, rest, usage, where)
            return
        info = model.model_fields.get(step.name)
        if info is None:
            raise ProfileError(f"{where}: {path} has no element {step.name!r}")
        choice = _choice_of(model, step.name)
        if choice:
            base = f"{choice}[x]"
            first = next(n for n in order if _choice_of(model, n) == choice)
            el = self.element(f"{eid}.{base}", f"{path}.{base}", (*key, order.index(first), 0))
            el.set("mustSupport", True, where)
            suffix = str(step.name)[len(str(choice)) :]
            el.add_type({"code": type_code(suffix), **_target(suffix, usage)})
            if not rest:
                self._finish(el, suffix, usage, where)
            elif usage.fixed is not None and not usage.conditional and len(rest) == 1:
                el.set(f"pattern{suffix}", {rest[0].name: usage.fixed}, where)
            else:
                self._document(el, usage)
            return
        child_key = (*key, order.index(step.name), 0)
        if step.coding is not None:
            self._component(eid, path, child_key, model, step, rest, usage, where)
            return
        el = self.element(f"{eid}.{step.name}", f"{path}.{step.name}", child_key)
        el.set("mustSupport", True, where)
        child = _field_class(model, step.name)
        if rest and child is not None and issubclass(child, BackboneElement):
            self._walk(el.id, el.path, child_key, child, rest, usage)
        elif rest:
            self._document(el, usage)  # inside a data type: the element itself carries the value
        else:
            if usage.targets:
                el.add_type({"code": "Reference", **_target("Reference", usage)})
            self._finish(el, child.__name__ if child is not None else "primitive", usage, where)

    def _extension(
        self,
        eid: str,
        path: str,
        key: tuple[Any, ...],
        order: list[str],
        step: paths.Step,
        rest: list[paths.Step],
        usage: Usage,
        where: str,
    ) -> None:
        url = str(step.url)
        if not (url.startswith(PROFILE_PREFIX) or url.startswith(CORE_EXTENSION_PREFIX)):
            # mCODE extensions: allowed by the open slicing, defined in the mCODE IG (not loadable here)
            self.foreign.append((f"{path}.extension('{url}')", usage.case_paths))
            return
        kind = step.name  # extension, or modifierExtension (it changes the meaning of its element)
        base_key = (*key, order.index(kind), 0)
        sliced = self.element(f"{eid}.{kind}", f"{path}.{kind}", base_key)
        sliced.data["slicing"] = {"discriminator": [{"type": "value", "path": "url"}], "rules": "open"}
        name = camel(url.rsplit("/", 1)[-1].removeprefix("ivclms-"))
        slice_key = (*key, order.index(kind), 1, url)
        el = self.element(f"{eid}.{kind}:{name}", f"{path}.{kind}", slice_key)
        el.set("min", 0, where)
        el.data["max"] = "*" if step.every or el.data.get("max") == "*" else "1"
        el.add_type({"code": "Extension", "profile": [url]})
        el.set("mustSupport", True, where)
        self._document(el, usage)
        if url.startswith(PROFILE_PREFIX):
            self.extensions.append(
                ExtensionUse(url, path, tuple(rest), usage, where, modifier=kind == "modifierExtension")
            )

    def _component(
        self,
        eid: str,
        path: str,
        key: tuple[Any, ...],
        model: Model,
        step: paths.Step,
        rest: list[paths.Step],
        usage: Usage,
        where: str,
    ) -> None:
        assert step.coding is not None
        sliced = self.element(f"{eid}.{step.name}", f"{path}.{step.name}", key)
        sliced.data["slicing"] = {"discriminator": [{"type": "pattern", "path": "code"}], "rules": "open"}
        system, code = step.coding
        name = camel(_code_name(system, code))
        el = self.element(f"{eid}.{step.name}:{name}", f"{path}.{step.name}", (*key[:-1], key[-1] + 1, name))
        el.set("min", 0, where)
        count = (step.index or 0) + 1
        if step.every or el.data.get("max") == "*":  # one component per value of a case list
            el.data["max"] = "*"
        else:
            el.data["max"] = str(max(count, int(el.data.get("max", "1"))))
        el.set("mustSupport", True, where)
        child = _field_class(model, step.name)
        if child is None:
            raise ProfileError(f"{where}: {path}.{step.name} cannot be sliced by code")
        code_el = self.element(
            f"{el.id}.code", f"{el.path}.code", (*el.key, child.elements_sequence().index("code"))
        )
        code_el.set("patternCodeableConcept", {"coding": [{"system": system, "code": code}]}, where)
        if rest:
            self._walk(el.id, el.path, el.key, child, rest, usage)

    def _finish(self, el: Element, suffix: str, usage: Usage, where: str) -> None:
        constrain(el, suffix, usage, where)
        if usage.required and not usage.conditional:
            el.data["min"] = 1
        self._document(el, usage)

    @staticmethod
    def _document(el: Element, usage: Usage) -> None:
        """Record which case elements land here (ElementDefinition.mapping) and describe the first."""
        for path in usage.case_paths:
            if path not in el.maps:
                el.maps.append(path)
        if usage.case_paths:
            el.data.setdefault("short", _short(describe(usage.case_paths[0])))


MODIFIER_REASONS = {
    PROFILE_PREFIX + "grade-comparator": (
        "The grade in the element's value is a bound, not the grade: with comparator '<' the actual "
        "grade is below the stated one (Clavien-Dindo < IIIa is I or II). A reader that ignored the "
        "extension would take the bound for the grade."
    ),
}
"""Why each modifier extension changes the meaning of its element (ElementDefinition.isModifierReason)."""

COMPARATOR_VALUESET = "http://hl7.org/fhir/ValueSet/quantity-comparator|4.0.1"
"""R4's value set of Quantity.comparator (<, <=, >=, >), bound to the grade-comparator extension."""


def constrain(el: Element, suffix: str, usage: Usage, where: str) -> None:
    """Binding and pattern of an element from the converter or the fixed value written there."""
    if isinstance(usage.fixed, str) and suffix == "Quantity":
        # a Quantity's system, even when written only with a value: a pattern binds only where present
        el.set("patternQuantity", {"system": usage.fixed}, where)
        return
    if usage.fixed is not None and not usage.conditional:
        if isinstance(usage.fixed, dict) and "coding" in usage.fixed:
            pattern = {"coding": [{"system": c["system"], "code": c["code"]} for c in usage.fixed["coding"]]}
            el.set("patternCodeableConcept", pattern, where)
        return
    if usage.kind in ("codeable", "coding") and usage.arg and not table(usage.arg).fhir_code:
        el.set("binding", {"strength": "required", "valueSet": table(usage.arg).valueset}, where)
    elif usage.kind == "comparator":  # a bound on a grade: the codes of Quantity.comparator
        el.set("binding", {"strength": "required", "valueSet": COMPARATOR_VALUESET}, where)
    elif usage.kind == "quantity" and usage.arg and not usage.arg.startswith("@"):
        el.set("patternQuantity", {"system": systems()["UCUM"], "code": usage.arg}, where)


def _target(suffix: str, usage: Usage) -> dict[str, Any]:
    return {"targetProfile": list(usage.targets)} if suffix == "Reference" and usage.targets else {}


def _short(text: str) -> str:
    return text.rstrip(".") if text else "Mapped from the IVC-LMS case"


Model = type[FHIRAbstractModel]


@cache
def _model(resource_type: str) -> Model:
    found: Model = get_fhir_model_class(resource_type)
    return found


def _choice_of(model: Model, name: str) -> str | None:
    """The choice element (``value`` for ``valueQuantity``) a model field belongs to, if any."""
    extra = model.model_fields[name].json_schema_extra
    choice = extra.get("one_of_many") if isinstance(extra, dict) else None
    return str(choice) if choice else None


def _field_class(model: Model, name: str) -> Model | None:
    """The model class of a complex element (None for a primitive)."""
    annotation = str(model.model_fields[name].annotation)
    m = re.search(r"abc\.(\w+?)Type\b", annotation)
    return _model(m.group(1)) if m else None


def _code_name(system: str, code: str) -> str:
    for name, c in spec().codes.items():
        if c["system"] == system and str(c["code"]) == code:
            return name
    raise ProfileError(f"component code {system}|{code} is not in the codes: section of case-fhir.yaml")


# ---- from templates to builders ------------------------------------------------------------------


def _item_pattern(template: Template) -> list[str]:
    return [p + template.suffix for p in template.each]


def reference_targets(s: Spec, template: Template, to: str) -> tuple[str, ...]:
    """Profiles of the templates whose items an element key pattern like ``surgery[{0}]`` names."""
    pattern = re.sub(r"\{\d+\}", "*", to)
    if "{item}" in pattern:
        pattern = "|".join(p.replace("{item}", e) for e in template.each for p in [pattern])
    wanted = set(pattern.split("|"))
    return tuple(t.profile for t in s.templates if wanted & set(_item_pattern(t)))


def case_paths(template: Template, name: str, bases: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The case paths (``[*]`` for list items) a template field reads, one per ``each`` pattern."""
    if name.startswith("$."):
        return (name[2:],)
    out: list[str] = []
    for each in bases or template.each:
        if name.startswith("^."):
            tokens = case_tokens(each)[:-1]  # the item's parent item, as forward.resolve finds it
            while tokens and tokens[-1] != "*":
                tokens = tokens[:-1]
            parent = case_path(tokens)
            out.append(f"{parent}.{name[2:]}" if parent else name[2:])
        else:
            out.append(f"{each}.{name}" if name not in ("", ".") else each)
    return tuple(dict.fromkeys(out))


def _put_group(
    b: Builder, group: Group, template: Template, prefix: list[paths.Step], bases: tuple[str, ...] = ()
) -> None:
    for fx in group.fixed:
        value = fixed_value(fx.value)
        b.put(
            [*prefix, *paths.parse(fx.path)],
            Usage(fixed=value, required=True, conditional=fx.when is not None),
        )
    for f in group.fields:
        where = case_paths(template, f.field, bases)
        steps = list(paths.parse(f.path))
        if f.items is not None:
            head, last = steps[:-1], steps[-1]
            item = paths.Step(last.name)
            b.put([*prefix, *head, item], Usage(case_paths=where))
            _put_group(b, f.items, template, [*prefix, *head, item], tuple(p + "[*]" for p in where))
            continue
        if f.unit_field is not None:  # quantity(@unit): the unit field lands in the same element
            where = (*where, *case_paths(template, f.unit_field, bases))
        if f.range is not None:
            # value[x] is Quantity or Range: the unit cannot be one pattern on the choice, so it is
            # checked by the mapping (reverse refuses another unit) instead of patternQuantity
            b.put([*prefix, *steps], Usage(case_paths=where, kind="bounded-quantity", arg=f.arg))
            b.put([*prefix, *paths.parse(f.range)], Usage(case_paths=where, kind="range", arg=f.arg))
            continue
        b.put([*prefix, *steps], Usage(case_paths=where, kind=f.kind, arg=f.arg))
        if f.comparator is not None:
            b.put([*prefix, *paths.parse(f.comparator)], Usage(case_paths=where, kind="comparator"))


def builder(s: Spec, template: Template) -> Builder:
    b = Builder(template.name, template.resource_type)
    root = b.element(template.resource_type, template.resource_type, ())
    root.data["short"] = template.title
    root.data["definition"] = template.description
    b.put(paths.parse("identifier"), Usage(required=True))
    _put_group(b, template.group, template, [])
    for ref in template.refs:
        targets = reference_targets(s, template, ref.to)
        b.put(paths.parse(ref.path), Usage(targets=targets, kind="reference", required=ref.to == "patient"))
    return b


def differential(b: Builder) -> list[dict[str, Any]]:
    return [e.as_fhir() for e in sorted(b.elements.values(), key=lambda e: _sortable(e.key))]


def _sortable(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((0, k, "") if isinstance(k, int) else (1, 0, str(k)) for k in key)


# ---- Extension definitions -------------------------------------------------------------------------


Header = Callable[[str, str, str, str, str], dict[str, Any]]


def _extension_elements(uses: list[ExtensionUse]) -> list[dict[str, Any]]:
    """Differential of one Extension: simple (``.valueX``) or complex (``.extension(sub).valueX``)."""
    first = uses[0]
    url = first.url
    subs: dict[str, list[ExtensionUse]] = {}
    simple: list[ExtensionUse] = []
    for use in uses:
        if len(use.rest) == 2 and use.rest[0].url is not None:
            subs.setdefault(str(use.rest[0].url), []).append(use)
        elif len(use.rest) == 1 and not use.rest[0].is_list:
            simple.append(use)
        else:
            raise ProfileError(f"{use.where}: extension {url} must end in .valueX or .extension(name).valueX")
    if subs and simple:
        raise ProfileError(f"{first.where}: extension {url} is used both as simple and as complex")
    text = describe(first.usage.case_paths[0]) if first.usage.case_paths else ""
    elements: list[dict[str, Any]] = [
        {"id": "Extension", "path": "Extension", "short": _short(text), "definition": text or url}
    ]
    if simple:
        elements.append({"id": "Extension.extension", "path": "Extension.extension", "max": "0"})
        elements.append({"id": "Extension.url", "path": "Extension.url", "fixedUri": url})
        elements.append(_value_element("Extension.value[x]", "Extension.value[x]", simple))
        return elements
    elements.append(
        {
            "id": "Extension.extension",
            "path": "Extension.extension",
            "slicing": {"discriminator": [{"type": "value", "path": "url"}], "rules": "closed"},
            "min": 1,
        }
    )
    for sub, sub_uses in subs.items():
        sid = f"Extension.extension:{sub}"
        sub_text = describe(sub_uses[0].usage.case_paths[0]) if sub_uses[0].usage.case_paths else sub
        elements.append(
            {
                "id": sid,
                "path": "Extension.extension",
                "sliceName": sub,
                "short": _short(sub_text),
                "definition": sub_text or sub,
                "min": 0,
                "max": "1",
                "mustSupport": True,
            }
        )
        elements.append({"id": f"{sid}.extension", "path": "Extension.extension.extension", "max": "0"})
        elements.append({"id": f"{sid}.url", "path": "Extension.extension.url", "fixedUri": sub})
        elements.append(_value_element(f"{sid}.value[x]", "Extension.extension.value[x]", sub_uses))
    elements.append({"id": "Extension.url", "path": "Extension.url", "fixedUri": url})
    elements.append({"id": "Extension.value[x]", "path": "Extension.value[x]", "max": "0"})
    return elements


def _value_element(eid: str, path: str, uses: list[ExtensionUse]) -> dict[str, Any]:
    el = Element(eid, path, ())
    el.data["min"] = 1
    for use in uses:
        step = use.rest[-1]
        if not step.name.startswith("value"):
            raise ProfileError(f"{use.where}: extension value must be a value[x] element, not {step.name!r}")
        suffix = step.name.removeprefix("value")
        el.add_type({"code": type_code(suffix)})
        constrain(el, suffix, use.usage, use.where)
        Builder._document(el, use.usage)
    bounded = {t["code"] for t in el.types} == {"Quantity", "Range"} and all(
        u.usage.kind in ("bounded-quantity", "range") for u in uses
    )
    if len(el.types) != 1 and not bounded:  # Quantity or Range: a bounded measure (case-fhir.yaml range:)
        raise ProfileError(f"{uses[0].where}: extension {uses[0].url} is given several value types")
    return el.as_fhir()


def extension_definitions(builders: list[Builder], header: Header) -> list[dict[str, Any]]:
    by_url: dict[str, list[ExtensionUse]] = {}
    for b in builders:
        for use in b.extensions:
            by_url.setdefault(use.url, []).append(use)
    out: list[dict[str, Any]] = []
    for url in sorted(by_url):
        uses = by_url[url]
        rid = url.rsplit("/", 1)[-1]
        elements = _extension_elements(uses)
        if any(u.modifier for u in uses):
            elements[0]["isModifier"] = True
            elements[0]["isModifierReason"] = MODIFIER_REASONS[url]
        title = elements[0]["short"]
        sd = header("StructureDefinition", rid, pascal(rid), title, elements[0]["definition"])
        contexts = list(dict.fromkeys(u.context for u in uses))
        sd.update(
            {
                "fhirVersion": FHIR_VERSION,
                "mapping": [_MODEL_MAPPING],
                "kind": "complex-type",
                "abstract": False,
                "context": [{"type": "element", "expression": c} for c in contexts],
                "type": "Extension",
                "baseDefinition": f"{CORE_EXTENSION_PREFIX}Extension",
                "derivation": "constraint",
                "differential": {"element": elements},
            }
        )
        out.append(sd)
    return out


# ---- profiles ---------------------------------------------------------------------------------------

FHIR_VERSION = "4.0.1"
_MODEL_MAPPING = {"identity": "ivclms-case", "uri": MODEL_URL, "name": "IVC-LMS case data set"}
_MCODE_MAPPING = {"identity": "mcode", "uri": MCODE_CANONICAL, "name": "HL7 mCODE STU4"}


def _profile(b: Builder, template: Template, header: Header) -> dict[str, Any]:
    rid = template.profile.rsplit("/", 1)[-1]
    description = template.description
    if template.mcode:
        description += (
            f" Corresponds to mCODE STU4 {MCODE_CANONICAL}/StructureDefinition/{template.mcode} (same codes"
            " and extension patterns; based on base R4: the mCODE and US Core packages are not loaded)."
        )
    sd = header("StructureDefinition", rid, pascal(rid), template.title, description)
    mappings = [_MODEL_MAPPING] + ([_MCODE_MAPPING] if template.mcode else [])
    elements = differential(b)
    if template.mcode:
        elements[0]["mapping"] = [
            {"identity": "mcode", "map": f"{MCODE_CANONICAL}/StructureDefinition/{template.mcode}"}
        ]
    sd.update(
        {
            "fhirVersion": FHIR_VERSION,
            "mapping": mappings,
            "kind": "resource",
            "abstract": False,
            "type": template.resource_type,
            "baseDefinition": f"{CORE_EXTENSION_PREFIX}{template.resource_type}",
            "derivation": "constraint",
            "differential": {"element": elements},
        }
    )
    return sd


def _provenance_profile(header: Header) -> dict[str, Any]:
    """Provenance of a mapped bundle: what ``service.mapping.forward`` writes (no template describes it)."""
    rid = f"{PROFILE_PREFIX}provenance".rsplit("/", 1)[-1]
    sd = header(
        "StructureDefinition",
        rid,
        pascal(rid),
        "Mapping provenance",
        "Provenance of every mapped bundle: the resources it produced (target), the source system (agent),"
        " the mapping version (policy) and the time of mapping (recorded).",
    )
    must = [("target", 1), ("recorded", 1), ("policy", 1), ("agent", 1)]
    order = _model("Provenance").elements_sequence()
    elements: list[dict[str, Any]] = [
        {"id": "Provenance", "path": "Provenance", "short": "Mapping provenance"}
    ]
    for name, low in sorted(must, key=lambda m: order.index(m[0])):
        elements.append(
            {"id": f"Provenance.{name}", "path": f"Provenance.{name}", "min": low, "mustSupport": True}
        )
    sd.update(
        {
            "fhirVersion": FHIR_VERSION,
            "kind": "resource",
            "abstract": False,
            "type": "Provenance",
            "baseDefinition": f"{CORE_EXTENSION_PREFIX}Provenance",
            "derivation": "constraint",
            "differential": {"element": elements},
        }
    )
    return sd


def structure_definitions(s: Spec, header: Header) -> list[dict[str, Any]]:
    """Every profile (one per template, plus Provenance) and every project extension they use."""
    builders = [builder(s, t) for t in s.templates]
    profiles = [_profile(b, t, header) for b, t in zip(builders, s.templates, strict=True)]
    return [*profiles, _provenance_profile(header), *extension_definitions(builders, header)]
