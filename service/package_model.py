"""The data set as a FHIR logical model, and its map to the profiles, for the package and ``docs/``.

The logical model is read off the marshmallow case schema (the input contract), and the ConceptMap
from its elements to the profile elements is read off the profile builders (the mapping definitions),
so neither is written twice: a field added to the schema without a mapping shows up as unmapped in
``docs/mapping.md`` and fails the test that every data-set element lands in a profile.

    python -m service.package_model     # rewrite docs/mapping.md (profiles/ is written by package_build)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marshmallow import Schema, fields

from service.codes import table
from service.mapping.spec import Spec, spec
from service.model import fields as f
from service.model.schema import GROUPS, CaseSchema
from service.package_profiles import MODEL_URL, Builder, Header, builder, camel, nested_schema, pascal

MODEL_NAME = "IvcLmsCase"
CONCEPTMAP_ID = "ivclms-case-to-fhir"
DOCS_FILE = Path(__file__).resolve().parent.parent / "docs" / "mapping.md"
# The two fields that identify a case are carried by every resource's business identifier, not by an
# element of one profile (see mappings/README.md, "Identity").
IDENTITY_FIELDS = ("case_id", "source_system")
IDENTITY_TARGET = "identifier"


@dataclass(frozen=True)
class ModelElement:
    path: str  # case path without list markers: ``surgery.renal_veins.side``
    field: fields.Field[Any]
    many: bool

    @property
    def leaf(self) -> bool:
        return nested_schema(self.field) is None


def walk(schema: Schema | None = None, prefix: str = "") -> Iterator[ModelElement]:
    """Every field of the case model, depth first in schema order."""
    for name, field in (schema or CaseSchema()).fields.items():
        path = f"{prefix}{name}"
        many = isinstance(field, fields.List | f.Dimensions)
        yield ModelElement(path, field, many)
        nested = nested_schema(field)
        if nested is not None:
            yield from walk(nested, f"{path}.")


def element_path(case_path: str) -> str:
    """Logical-model element path of a case path: ``surgery.ivc_management`` -> ``surgery.ivcManagement``
    (ElementDefinition names are alphanumeric, eld-20); the case name is kept as the element's alias."""
    return ".".join(camel(part) for part in case_path.split("."))


def _type(field: fields.Field[Any]) -> tuple[str, dict[str, Any]]:
    """(FHIR type code, extra ElementDefinition keys) of a model field."""
    inner = field.inner if isinstance(field, fields.List) else field
    if nested_schema(field) is not None:
        return "BackboneElement", {}
    if isinstance(inner, f.Code):
        binding = {"strength": "required", "valueSet": table(inner.table_name).valueset}
        extra: dict[str, Any] = {"binding": binding}
        if inner.integer:
            extra["comment"] = "An integer in the case JSON; the code is its decimal form."
        return "code", extra
    if isinstance(inner, f.Dimensions | f.Measure):
        return "decimal", {"comment": f"In {inner.unit} (UCUM); other units of the dimension are converted."}
    if isinstance(inner, f.Number):
        unit = inner.metadata.get("unit")
        return ("integer" if inner.integer else "decimal"), ({"comment": f"In {unit}."} if unit else {})
    if isinstance(inner, f.Bool):
        return "boolean", {}
    if isinstance(inner, f.Date):
        if inner.unknown:  # issue 15: the case JSON's `unknown` is a date element with no value
            note = (
                "`unknown` in the case JSON when the source gives no date: the element then has no value "
                "and the data-absent-reason extension (valueCode unknown)."
            )
            return "date", {"comment": note}
        return "date", {}
    if isinstance(inner, f.Uri):
        return "uri", {}
    return "string", {}


def logical_model(header: Header) -> dict[str, Any]:
    rid = MODEL_URL.rsplit("/", 1)[-1]
    sd = header(
        "StructureDefinition",
        rid,
        MODEL_NAME,
        "IVC-LMS case data set (logical model)",
        "Every element a case of leiomyosarcoma of the inferior vena cava carries, in eleven groups, with"
        " cardinalities, canonical units and code tables; the input contract of the service (case JSON,"
        f" CSV columns). ConceptMap {CONCEPTMAP_ID} maps each element to the profile element carrying it.",
    )
    elements: list[dict[str, Any]] = [
        {"id": MODEL_NAME, "path": MODEL_NAME, "short": "IVC-LMS case", "definition": "One IVC-LMS case."}
    ]
    for el in walk():
        code, extra = _type(el.field)
        path = f"{MODEL_NAME}.{element_path(el.path)}"
        description = str(el.field.metadata.get("description", "")) or el.path
        max_ = str(f.Dimensions.MAX) if isinstance(el.field, f.Dimensions) else ("*" if el.many else "1")
        elements.append(
            {
                "id": path,
                "path": path,
                "short": description.rstrip("."),
                "alias": [el.path],
                "definition": description,
                "min": 1 if el.field.required else 0,
                "max": max_,
                "type": [{"code": code}],
                **extra,
            }
        )
    sd.update(
        {
            "fhirVersion": "4.0.1",
            "kind": "logical",
            "abstract": False,
            "type": MODEL_URL,
            "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Element",
            "derivation": "specialization",
            "differential": {"element": elements},
        }
    )
    return sd


# ---- model -> profile elements -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    profile: str
    resource_type: str
    element: str  # ElementDefinition.id in the profile
    case_path: str  # as the template reads it, with ``[*]`` and positions


def _model_path(case_path: str) -> str:
    """``surgery[*].renal_veins[*].side`` / ``diagnosis.tumour_size[*].dimensions_cm[1]`` -> model path."""
    out = []
    for part in case_path.split("."):
        out.append(part.split("[", 1)[0])
    return ".".join(out)


def targets(s: Spec | None = None) -> dict[str, list[Target]]:
    """Model path -> every profile element its value lands in (from the profile builders)."""
    s = s or spec()
    found: dict[str, list[Target]] = {}
    for template in s.templates:
        b: Builder = builder(s, template)
        for el in b.elements.values():
            for case_path in el.maps:
                target = Target(template.profile, template.resource_type, el.id, case_path)
                found.setdefault(_model_path(case_path), []).append(target)
        for element, case_paths in b.foreign:
            for case_path in case_paths:
                target = Target(template.profile, template.resource_type, element, case_path)
                found.setdefault(_model_path(case_path), []).append(target)
        for identity in IDENTITY_FIELDS:
            element = f"{template.resource_type}.{IDENTITY_TARGET}"
            found.setdefault(identity, []).append(
                Target(template.profile, template.resource_type, element, identity)
            )
    return found


def conceptmap(header: Header) -> dict[str, Any]:
    cm = header(
        "ConceptMap",
        CONCEPTMAP_ID,
        pascal(CONCEPTMAP_ID),
        "IVC-LMS data set to FHIR profiles",
        "Each element of the IVC-LMS logical model to the element of the profile that carries it (element ids"
        " of the profiles' differentials), read off mappings/case-fhir.yaml. case_id and source_system are"
        " carried by the business identifier of every resource (source_system|case_id|element key).",
    )
    groups: dict[str, dict[str, Any]] = {}
    found = targets()
    for el in walk():
        for t in found.get(el.path, []):
            if el.path in IDENTITY_FIELDS and t.profile != _first_profile():
                continue
            group = groups.setdefault(t.profile, {"source": MODEL_URL, "target": t.profile, "element": []})
            code = f"{MODEL_NAME}.{element_path(el.path)}"
            entry = next((e for e in group["element"] if e["code"] == code), None)
            if entry is None:
                entry = {"code": code, "target": []}
                group["element"].append(entry)
            target: dict[str, Any] = {"code": t.element, "equivalence": "equivalent"}
            position = _position(t.case_path)
            same = next((x for x in entry["target"] if x["code"] == t.element), None)
            if position is not None:
                target["equivalence"] = "narrower"
                target["comment"] = f"item {position + 1} of the list"
                if same is not None and "comment" in same:
                    items = [*re.findall(r"\d+", same["comment"]), str(position + 1)]
                    same["comment"] = f"items {', '.join(items)} of the list"
                    continue
            if same is None:
                entry["target"].append(target)
    cm["group"] = list(groups.values())
    return cm


def _first_profile() -> str:
    return spec().templates[0].profile


def _position(case_path: str) -> int | None:
    last = case_path.rsplit(".", 1)[-1]
    if last.endswith("]") and not last.endswith("[*]"):
        return int(last.rsplit("[", 1)[1].rstrip("]"))
    return None


# ---- docs/mapping.md -----------------------------------------------------------------------------


def unmapped() -> list[str]:
    """Leaf elements of the data set no profile element carries (must stay empty)."""
    found = targets()
    return [el.path for el in walk() if el.leaf and el.path not in found]


DECISIONS = [
    "## Bounds, ranges and grades (decisions)",
    "",
    'The data set ("Incomplete records") lets a measurement be a bound (`> 75 %`) or a range (`90-95 %`)'
    " and a grade be a bound (Clavien-Dindo `< IIIa`).",
    "",
    '- **Measurements** (`{comparator, value}` / `{low, high}`): the bound is Quantity.comparator (R4: "if'
    ' the comparator is "<" , then the real value is < stated value") at the element\'s `valueQuantity`,'
    " a range is the element's `valueRange` (case-fhir.yaml `range:`).",
    "- **Laboratory results** (creatinine < 90 umol/L, LDH > 250 U/L): the same, with the result's own UCUM"
    " unit written into the Quantity (or both ends of the Range) and read back from there"
    " (`quantity(@unit)`); a converted unit converts the bound's numbers too.",
    "- **Tumour size**: only the largest (first) of the 1-3 dimensions may be a bound (`> 10` cm), so the"
    " list keeps its shape and every size keeps its LOINC component (33728-7 for the largest, with"
    " Quantity.comparator). A range of a dimension is not taken: no source in the data set gives one.",
    "- **Clavien-Dindo grade as a bound**: CodeableConcept has no comparator, and a valueRange over an"
    " ordinal would need numbers the scale does not have (IIIa, IIIb). The component keeps the grade of"
    " the bound in `valueCodeableConcept` (so its standard and project codings stay checked) and the"
    " comparator, with Quantity.comparator's codes (`quantity-comparator` value set, required), in the"
    " project extension `ivclms-grade-comparator` as a **modifierExtension** (R4"
    ' BackboneElement.modifierExtension: "additional information ... that modifies the understanding of'
    ' the element in which it is contained"): a reader that ignored a plain extension'
    " would read `< IIIa` as grade IIIa. A bound must admit at least one grade and exclude at least one"
    " (`< I` and `<= V` are refused). The registry counts a complication as major by what its bound"
    " decides (`< IIIa`: not major; `> II`, `>= IIIa`: major; `< IVa`: unknown).",
    "- **Death without a date**: `Patient.deceasedBoolean` = true when the vital status is dead and no"
    " death date is known; `deceasedDateTime` at the recorded precision otherwise (`2019`).",
    "- **One surgery, one date**: the resection Procedure and every resource that is part of the"
    " operation (organ resection, IVC and renal vein management, intra-operative events) carry"
    " `surgery[].date`; when read back they must agree, else the Bundle is refused naming both elements"
    " (POST /fhir 422, `ivclms unmap`, a pull records it as rejected). Dates agree when one contains the"
    " other, as the data set's date rules compare at the coarser precision: `2020` agrees with"
    " `2020-03-02` and the case keeps `2020-03-02`; `2020-03` and `2020-04-10` do not agree. `unknown`"
    " (a data-absent reason) agrees with any date.",
    "- **A dateTime with a time, a Period**: R4 `dateTime` may carry a time (`2021-04-12T23:30:00-05:00`;"
    ' "If hours and minutes are specified, a time zone SHALL be populated") and `performed[x]` may be a'
    " Period. The case date of a timed value is its calendar date as written, in the value's own offset"
    " (`2021-04-12T23:30:00-05:00` is `2021-04-12`, not the 13th it is in UTC), so it agrees with"
    " `2021-04-12` and not with `2021-04-13`; that of a Period (where the profile's `[x]` is read as a"
    ' dateTime) is its `start`, and a Period without a start gives no date (R4: "the low boundary is not'
    ' known"): a date the case requires is then refused naming `performedPeriod.start`, not written'
    " `unknown`, which would lose the end sent (a date not known is sent with a data-absent reason). The"
    " case format has no time, so only the date is kept: the time (and a Period's end) is not stored and"
    " is not written back.",
    "- **Plain resources placed by date** (`POST /fhir` and the pull, imaging and laboratory results):"
    " a result on or before the first surgery is work-up (`diagnosis.*`), a later one is placed at the"
    " nearest follow-up visit or after surgery. The surgery's date is the one the case keeps (the most"
    " precise its Procedures agree on: a resection dated `2021` whose parts say `2021-04-12` is"
    ' `2021-04-12`), compared at the coarser precision (data set, "Incomplete records"). A result whose'
    " date overlaps the surgery's (surgery `2021`, result `2021-04-19`) could be either: it is not guessed"
    ' but refused, "cannot be placed before or after the surgery" (POST /fhir 422 naming the entry),'
    " unless it is on or before the diagnosis date, which precedes the surgery. A result certainly after"
    ' the surgery is never work-up ("diagnosis <= surgery <= follow-up"): with no follow-up visit of'
    " known date to place it at (imaging, with every visit dated unknown or none sent) it is refused, not"
    " guessed onto a visit. A graft patency is the visit of the disease status whose date it shares"
    " (both unknown is shared); a dated one and one dated unknown are not one visit.",
    "",
]
"""Where the data set was silent on the FHIR form: what was decided, and why (docs/mapping.md)."""


def render() -> str:
    found = targets()
    titles = dict(GROUPS)
    lines = [
        "# Data set -> FHIR profiles",
        "",
        "Generated by `python -m service.package_model` from `mappings/case-fhir.yaml` and the case schema;"
        " do not edit by hand. The same correspondences are published in the package as the logical model"
        f" `{MODEL_URL}` and the ConceptMap `{CONCEPTMAP_ID}`, and in each profile's"
        " `ElementDefinition.mapping` (identity `ivclms-case`).",
        "",
        "`case_id` and `source_system` are part of the business identifier of every resource"
        " (`<source_system>|<case_id>|<element key>`, system `https://fhir.ivc-lms.org/identifier/element`).",
        "",
        *DECISIONS,
    ]
    current = None
    for el in walk():
        group = el.path.split(".", 1)[0] if "." in el.path or nested_schema(el.field) else "case"
        if group != current:
            current = group
            lines += [
                "",
                f"## {titles.get(group, group)}",
                "",
                "| data-set element | profile | element |",
                "|---|---|---|",
            ]
        if not el.leaf:
            continue
        hits = found.get(el.path, [])
        if el.path in IDENTITY_FIELDS:
            lines.append(f"| `{el.path}` | every profile | `identifier` (business identifier) |")
            continue
        if not hits:
            lines.append(f"| `{el.path}` | **not mapped** | |")
            continue
        for t in hits:
            name = t.profile.rsplit("/", 1)[-1]
            where = f" ({t.case_path.split('.')[-1]})" if _position(t.case_path) is not None else ""
            link = f"[{name}](../profiles/StructureDefinition-{name}.json)"
            lines.append(f"| `{el.path}`{where} | {link} | `{t.element}` |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def main() -> int:
    DOCS_FILE.write_text(render(), encoding="utf-8")
    missing = unmapped()
    for path in missing:
        print(f"not mapped: {path}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
