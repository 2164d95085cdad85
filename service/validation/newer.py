"""What HL7 published after R4 4.0.1 that base R4's own definitions would reject: a reviewed data file.

HL7's reference validator reads code systems from current HL7 Terminology (THO) and core extensions
from the ``hl7.fhir.uv.extensions`` package; we (and HAPI) read R4 4.0.1. Where the newer packages
only *add* to R4, R4 alone turns valid data into errors ("Unknown code" for a code THO added later,
"extension not allowed" for a context the extensions package added). ``newer.json`` (beside this
module, in git) holds those additions as derived facts, with the npm package name, version and
shasum each was read from:

- ``codes``: per base R4 CodeSystem that THO has since extended, the codes THO adds (display and
  THO's direct parents, so ``is-a`` filters find them), and the R4 version they extend;
- ``contexts``: per base R4 core extension, the ``element`` contexts the extensions package adds.

Both apply only to the R4 definition they were derived against (same ``version``): a CodeSystem or
extension of another package with the same URL gets nothing. Nothing is removed: a code or context
the newer packages dropped stays valid, as in R4 (and HAPI).

Not a FHIR CodeSystem ``supplement`` (content ``supplement``): that adds properties, never codes.

Refresh (the packages come from the npm registry; see docs/validation.md):

    npm pack hl7.terminology.r4@VERSION hl7.fhir.uv.extensions.r4@VERSION   # into a temp dir
    python -m service.validation.newer THO.tgz EXTENSIONS.tgz                # rewrites newer.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson

DATA = Path(__file__).resolve().with_name("newer.json")


@dataclass(frozen=True)
class NewerCode:
    display: str | None
    parents: tuple[str, ...]
    """THO's direct parents (``subsumedBy``, or nesting)."""


@dataclass(frozen=True)
class NewerSystem:
    r4_version: str
    """The version of the base R4 CodeSystem these codes extend; another version gets none of them."""
    source: str
    """``package#version`` the codes were read from, for the issue that says where a code was found."""
    codes: dict[str, NewerCode]


@dataclass(frozen=True)
class NewerContexts:
    r4_version: str
    source: str
    contexts: tuple[str, ...]


@dataclass(frozen=True)
class Newer:
    systems: dict[str, NewerSystem] = field(default_factory=dict)
    extensions: dict[str, NewerContexts] = field(default_factory=dict)

    def codes_for(self, cs: dict[str, Any]) -> NewerSystem | None:
        """The newer codes of this loaded CodeSystem, if it is the R4 one they were derived against."""
        found = self.systems.get(str(cs.get("url", "")))
        return found if found is not None and cs.get("version") == found.r4_version else None

    def contexts_for(self, sd: dict[str, Any]) -> tuple[str, ...]:
        """The newer element contexts of this extension definition, if it is base R4's."""
        found = self.extensions.get(str(sd.get("url", "")))
        return found.contexts if found is not None and sd.get("version") == found.r4_version else ()


@cache
def load(path: Path = DATA) -> Newer:
    """The data file as typed records (read once per process)."""
    data = orjson.loads(path.read_bytes())
    packages = {p["role"]: f"{p['name']}#{p['version']}" for p in data["packages"]}
    systems = {
        url: NewerSystem(
            r4_version=entry["r4Version"],
            source=packages["terminology"],
            codes={
                code: NewerCode(c.get("display"), tuple(c.get("parents", ())))
                for code, c in entry["codes"].items()
            },
        )
        for url, entry in data["codes"].items()
    }
    extensions = {
        url: NewerContexts(entry["r4Version"], packages["extensions"], tuple(entry["contexts"]))
        for url, entry in data["contexts"].items()
    }
    return Newer(systems, extensions)


# ---- derivation (run by hand when refreshing; reads the npm tarballs and base R4) ----------------------


def _package_json(tgz: Path) -> Iterator[dict[str, Any]]:
    with tarfile.open(tgz, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.startswith("package/") and member.name.endswith(".json"):
                f = tar.extractfile(member)
                if f is not None:
                    yield orjson.loads(f.read())


def _manifest(tgz: Path, role: str) -> dict[str, str]:
    with tarfile.open(tgz, "r:gz") as tar:
        f = tar.extractfile("package/package.json")
        assert f is not None
        manifest = orjson.loads(f.read())
    sha1 = hashlib.sha1(tgz.read_bytes()).hexdigest()
    return {"role": role, "name": manifest["name"], "version": manifest["version"], "shasum": sha1}


def _all_concepts(
    concepts: Iterable[dict[str, Any]], parent: str | None = None
) -> Iterator[tuple[dict[str, Any], str | None]]:
    for c in concepts:
        yield c, parent
        yield from _all_concepts(c.get("concept", []), str(c["code"]))


def derive(tho: Path, extensions: Path, base: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The data file's content: THO's and the extensions package's additions to ``base`` (R4)."""
    r4_systems: dict[str, dict[str, Any]] = {}
    r4_extensions: dict[str, dict[str, Any]] = {}
    for r in base:
        if r.get("resourceType") == "CodeSystem" and r.get("content") == "complete":
            r4_systems[r["url"]] = r
        elif r.get("resourceType") == "StructureDefinition" and r.get("type") == "Extension":
            r4_extensions[r["url"]] = r
    codes: dict[str, Any] = {}
    for cs in _package_json(tho):
        r4 = r4_systems.get(str(cs.get("url")))
        if cs.get("resourceType") != "CodeSystem" or r4 is None:
            continue
        known = {str(c["code"]) for c, _ in _all_concepts(r4.get("concept", []))}
        added: dict[str, Any] = {}
        for c, nested_parent in _all_concepts(cs.get("concept", [])):
            code = str(c["code"])
            if code in known:
                continue
            parents = [str(p["valueCode"]) for p in c.get("property", []) if p.get("code") == "subsumedBy"]
            if nested_parent is not None and nested_parent not in parents:
                parents.insert(0, nested_parent)
            entry: dict[str, Any] = {"display": c.get("display")}
            if parents:
                entry["parents"] = parents
            added[code] = entry
        if added:
            codes[cs["url"]] = {"r4Version": r4.get("version"), "codes": dict(sorted(added.items()))}
    contexts: dict[str, Any] = {}
    for sd in _package_json(extensions):
        r4 = r4_extensions.get(str(sd.get("url")))
        if sd.get("resourceType") != "StructureDefinition" or r4 is None:
            continue
        old = {c.get("expression") for c in r4.get("context", []) if c.get("type") == "element"}
        new = [c.get("expression") for c in sd.get("context", []) if c.get("type") == "element"]
        wider = sorted({str(e) for e in new if e not in old})
        # an R4 extension without element contexts is allowed everywhere already
        if wider and old:
            contexts[sd["url"]] = {"r4Version": r4.get("version"), "contexts": wider}
    return {
        "packages": [_manifest(tho, "terminology"), _manifest(extensions, "extensions")],
        "codes": dict(sorted(codes.items())),
        "contexts": dict(sorted(contexts.items())),
    }


def dump(data: dict[str, Any]) -> bytes:
    """One code or extension per line, so a refresh reads as a short diff."""
    out = io.StringIO()
    out.write('{\n "packages": [\n')
    out.write(",\n".join("  " + orjson.dumps(p).decode() for p in data["packages"]))
    out.write('\n ],\n "codes": {')
    for i, (url, entry) in enumerate(data["codes"].items()):
        out.write("," if i else "")
        out.write(
            f'\n  {orjson.dumps(url).decode()}: {{"r4Version": {orjson.dumps(entry["r4Version"]).decode()},'
        )
        out.write(' "codes": {')
        lines = [
            f"   {orjson.dumps(k).decode()}: {orjson.dumps(v).decode()}" for k, v in entry["codes"].items()
        ]
        out.write("\n" + ",\n".join(lines) + "\n  }}")
    out.write('\n },\n "contexts": {\n')
    lines = [f"  {orjson.dumps(k).decode()}: {orjson.dumps(v).decode()}" for k, v in data["contexts"].items()]
    out.write(",\n".join(lines) + "\n }\n}\n")
    return out.getvalue().encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Rewrite newer.json from the npm tarballs of THO and extensions"
    )
    parser.add_argument("terminology", type=Path, help="hl7.terminology.r4-VERSION.tgz")
    parser.add_argument("extensions", type=Path, help="hl7.fhir.uv.extensions.r4-VERSION.tgz")
    parser.add_argument("--out", type=Path, default=DATA)
    args = parser.parse_args(argv)
    from service.validation.definitions import load_base

    base, _ = load_base()
    data = derive(args.terminology, args.extensions, base)
    text = dump(data)
    orjson.loads(text)  # the hand-laid layout must still be JSON
    args.out.write_bytes(text)
    n = sum(len(e["codes"]) for e in data["codes"].values())
    print(f"{args.out}: {n} codes in {len(data['codes'])} code systems, {len(data['contexts'])} extensions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
