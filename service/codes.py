"""Code tables from ``mappings/codes.yaml``: the one source of every enumerated value and its codings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

MAPPINGS_DIR = Path(__file__).resolve().parent.parent / "mappings"
CANONICAL = "https://fhir.ivc-lms.org"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
"""FHIR R4's data-absent-reason CodeSystem (terminology.md: verified, in HAPI's R4 definitions)."""
ABSENT_REASONS: dict[str, tuple[str, str]] = {
    "unknown": ("unknown", "Unknown"),
    "not_applicable": ("not-applicable", "Not Applicable"),
}
"""Case key -> (data-absent-reason code, its R4 display) of the reasons a table may accept (``absent:``)."""
DATA_ABSENT_EXTENSION = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
"""R4's extension "Provides a reason why the expected value or elements in the element that is extended
are missing": on a primitive with no value (``_onsetDateTime``), how a date the source does not give is
written (issue 15)."""


def absent_primitive(key: str) -> dict[str, Any]:
    """The JSON of a primitive with no value and a data-absent-reason extension (``_performedDateTime``)."""
    return {"extension": [{"url": DATA_ABSENT_EXTENSION, "valueCode": ABSENT_REASONS[key][0]}]}


def absent_primitive_key(node: Any) -> str | None:
    """The case key of the data-absent reason a primitive's extension carries, or None."""
    extensions = node.get("extension", []) if isinstance(node, dict) else []
    found = [
        e.get("valueCode")
        for e in extensions
        if isinstance(e, dict) and e.get("url") == DATA_ABSENT_EXTENSION
    ]
    return next((key for key, (code, _) in ABSENT_REASONS.items() if found and found[0] == code), None)


@dataclass(frozen=True)
class Coding:
    system: str
    code: str
    display: str

    def as_fhir(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True)
class Value:
    key: str
    display: str
    standard: Coding | None
    extra: dict[str, Any]


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    values: dict[str, Value]
    fhir_code: bool = False
    absent: tuple[str, ...] = ()
    """Data-absent reasons (``unknown``, ``not_applicable``) accepted besides the values: not project
    codes, they are written as data-absent-reason codings."""

    @property
    def system(self) -> str:
        """URL of the project CodeSystem for this table."""
        return f"{CANONICAL}/CodeSystem/ivclms-{self.name}"

    @property
    def valueset(self) -> str:
        return f"{CANONICAL}/ValueSet/ivclms-{self.name}-vs"

    def keys(self) -> list[str]:
        """The table's real values (without the data-absent reasons)."""
        return list(self.values)

    def accepted(self) -> list[str]:
        """Every key a case field of this table takes: the values, then the data-absent reasons."""
        return [*self.values, *self.absent]

    def is_absent(self, key: str) -> bool:
        return key in self.absent

    def absent_concept(self, key: str) -> dict[str, Any]:
        """The CodeableConcept of a data-absent reason (R4 data-absent-reason code and display)."""
        code, display = ABSENT_REASONS[key]
        return {"coding": [{"system": DATA_ABSENT_REASON, "code": code, "display": display}], "text": display}

    def local(self, key: str) -> Coding:
        return Coding(self.system, key, self.values[key].display)

    def codeable(self, key: str) -> dict[str, Any]:
        """CodeableConcept for a value: the verified standard coding first (if any), then the project code."""
        if key in self.absent:
            return self.absent_concept(key)
        value = self.values[key]
        codings = [value.standard.as_fhir()] if value.standard else []
        codings.append(self.local(key).as_fhir())
        return {"coding": codings, "text": value.display}

    def key_of(self, concept: dict[str, Any]) -> str | None:
        """Reverse: the value key for a CodeableConcept (project code preferred, then standard code)."""
        codings = concept.get("coding", [])
        for c in codings:
            if c.get("system") == DATA_ABSENT_REASON:
                for key in self.absent:
                    if ABSENT_REASONS[key][0] == c.get("code"):
                        return key
        for c in codings:
            if c.get("system") == self.system and c.get("code") in self.values:
                return str(c["code"])
        for c in codings:
            for key, value in self.values.items():
                if value.standard and (value.standard.system, value.standard.code) == (
                    c.get("system"),
                    c.get("code"),
                ):
                    return key
        return None


@cache
def systems() -> dict[str, str]:
    data: dict[str, str] = _load()["systems"]
    return data


@cache
def tables() -> dict[str, Table]:
    raw = _load()
    alias = raw["systems"]
    out: dict[str, Table] = {}
    for name, spec in raw["tables"].items():
        values: dict[str, Value] = {}
        for key, v in spec["values"].items():
            std = v.get("standard")
            standard = Coding(alias[std["system"]], str(std["code"]), std["display"]) if std else None
            extra = {k: val for k, val in v.items() if k not in ("display", "standard")}
            values[str(key)] = Value(str(key), v["display"], standard, extra)
        absent = tuple(str(a) for a in spec.get("absent", ()))
        for reason in absent:
            if reason not in ABSENT_REASONS or reason in values:
                raise ValueError(f"codes.yaml: tables.{name}.absent: {reason!r} is not a free absent reason")
        out[name] = Table(name, spec["title"], values, bool(spec.get("fhir_code", False)), absent)
    return out


def table(name: str) -> Table:
    return tables()[name]


@cache
def _load() -> dict[str, Any]:
    with (MAPPINGS_DIR / "codes.yaml").open() as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data
