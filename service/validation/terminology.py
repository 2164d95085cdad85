"""Code system and value set membership from the loaded definitions only (no terminology server).

A value set is expanded once into (system, code) pairs from its ``compose``: enumerated concepts,
whole code systems that are loaded (base R4 and the project CodeSystems), ``is-a``/``descendent-of``
filters on loaded hierarchies, other value sets, minus excludes. What cannot be expanded here, an
include of a whole external system (LOINC, SNOMED CT, RxNorm, UCUM, ...) or an unsupported filter, makes
membership *unknown* for codes of that system, and the validator then reports nothing, as HAPI can
only say "CodeSystem is unknown" there (docs/validation.md explains how the tests treat that).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from service.validation.definitions import Definitions
from service.validation.newer import NewerCode

_CHECKABLE_CONTENT = ("complete",)


@dataclass
class Expansion:
    codes: set[tuple[str, str]] = field(default_factory=set)
    open_systems: set[str] = field(default_factory=set)  # membership unknown for codes of these

    def contains(self, system: str | None, code: str) -> bool | None:
        """True/False, or None when the value set includes a system that cannot be enumerated here."""
        if system is None:
            if any(c == code for _, c in self.codes):
                return True
            return None if self.open_systems else False
        if (system, code) in self.codes:
            return True
        return None if system in self.open_systems else False


class Terminology:
    def __init__(self, defs: Definitions) -> None:
        self.defs = defs
        self._expansions: dict[str, Expansion | None] = {}
        self._codes: dict[str, dict[str, dict[str, Any]]] = {}

    def codes_of(self, system: str) -> dict[str, dict[str, Any]] | None:
        """Every concept of a loaded, complete CodeSystem by code (nested concepts flattened), with the
        codes current HL7 Terminology added to base R4's version of it (``newer.json``): the reference
        validator accepts them, and an R4 value set that takes the whole system, or an ``is-a`` branch
        of it, takes them too (``source`` says where such a code was found)."""
        if system in self._codes:
            return self._codes[system]
        cs = self.defs.code_system(system)
        if cs is None or cs.get("content") not in _CHECKABLE_CONTENT:
            return None
        flat: dict[str, dict[str, Any]] = {}
        _flatten(cs.get("concept", []), flat, ())
        added = self.defs.newer.codes_for(cs)
        if added is not None:
            for code in added.codes:
                flat.setdefault(
                    code,
                    {
                        "display": added.codes[code].display,
                        "parents": _ancestors(code, flat, added.codes, set()),
                        "source": added.source,
                    },
                )
        self._codes[system] = flat
        return flat

    def code_known(self, system: str, code: str) -> bool | None:
        """Is ``code`` defined in ``system``? None if the system is not loaded (or only a fragment)."""
        codes = self.codes_of(system)
        return None if codes is None else code in codes

    def newer_source(self, system: str, code: str) -> str | None:
        """``package#version`` where a code that base R4's CodeSystem lacks was found, else None."""
        found = (self.codes_of(system) or {}).get(code)
        return found.get("source") if found is not None else None

    def expansion(self, url: str) -> Expansion | None:
        """The expansion of a value set, or None if the value set is not loaded."""
        url = url.split("|", 1)[0]
        if url not in self._expansions:
            self._expansions[url] = None  # guards against include loops
            vs = self.defs.value_set(url)
            self._expansions[url] = self._expand(vs) if vs is not None else None
        return self._expansions[url]

    def _expand(self, vs: dict[str, Any]) -> Expansion:
        out = Expansion()
        compose = vs.get("compose", {})
        for inc in compose.get("include", []):
            part = self._include(inc)
            out.codes |= part.codes
            out.open_systems |= part.open_systems
        for exc in compose.get("exclude", []):
            out.codes -= self._include(exc).codes
        return out

    def _include(self, inc: dict[str, Any]) -> Expansion:
        part = Expansion()
        system = inc.get("system")
        nested = [self.expansion(u) for u in inc.get("valueSet", [])]
        if system:
            if inc.get("concept"):
                part.codes = {(system, str(c["code"])) for c in inc["concept"]}
            else:
                codes = self.codes_of(system)
                selected = _filter(codes, inc.get("filter", [])) if codes is not None else None
                if selected is None:
                    part.open_systems.add(system)
                else:
                    part.codes = {(system, c) for c in selected}
        for exp in nested:
            if exp is None:
                continue
            if system:
                part.codes &= exp.codes
            else:
                part.codes |= exp.codes
                part.open_systems |= exp.open_systems
        return part


def _flatten(
    concepts: Iterable[dict[str, Any]], out: dict[str, dict[str, Any]], parents: tuple[str, ...]
) -> None:
    for c in concepts:
        code = str(c["code"])
        out[code] = {"display": c.get("display"), "parents": parents}
        _flatten(c.get("concept", []), out, (*parents, code))


def _ancestors(
    code: str, r4: dict[str, dict[str, Any]], added: dict[str, NewerCode], seen: set[str]
) -> tuple[str, ...]:
    """A newer code's ancestors: its THO parents, then theirs (R4's hierarchy for an R4 parent)."""
    out: list[str] = []
    for parent in added[code].parents if code in added else ():
        if parent in seen:
            continue
        seen.add(parent)
        up = r4[parent]["parents"] if parent in r4 else _ancestors(parent, r4, added, seen)
        out += [parent, *up]
    return tuple(dict.fromkeys(out))


def _filter(codes: dict[str, dict[str, Any]], filters: list[dict[str, Any]]) -> set[str] | None:
    """Codes selected by the filters; None if a filter is not one this module understands."""
    selected = set(codes)
    for f in filters:
        op, value = f.get("op"), str(f.get("value"))
        if f.get("property") != "concept" or op not in ("is-a", "descendent-of"):
            return None
        below = {c for c, info in codes.items() if value in info["parents"]}
        selected &= below | ({value} if op == "is-a" else set())
    return selected
