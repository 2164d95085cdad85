"""Snapshots of the package's StructureDefinitions, generated from their base and differential.

The package ships differentials only (profiles/ is generated from the mapping). A snapshot starts as a
copy of the base snapshot; each differential element then either constrains an element already there,
adds a slice (a copy of the sliced element and its descendants, renamed ``path:slice``), or first
unfolds the element's data type (a data type's children are not in its parent's snapshot) and then
constrains a child. Snapshots are kept on disk under ``cache/`` beside the base jar, keyed by a hash of
profiles/*.json, the base jar and this generator's format, so editing profiles/ invalidates them.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import orjson

from service.validation.definitions import Definitions, package_files

# Bump when generated snapshots change shape, so old caches are not read.
SNAPSHOT_FORMAT = "2"
_NOT_INHERITED = ("id", "path", "sliceName", "mapping")


class SnapshotError(ValueError):
    """A differential names an element that neither its base nor any data type has."""


def cache_key(profiles_dir: Path, base_version: str) -> str:
    """Changes whenever any package file, the base jar or the snapshot format changes."""
    digest = hashlib.sha256(f"{SNAPSHOT_FORMAT}|{base_version}".encode())
    for path in package_files(profiles_dir):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def cached_snapshots(
    defs: Definitions, profiles_dir: Path, cache_dir: Path
) -> dict[str, list[dict[str, Any]]]:
    """Snapshot elements of every package StructureDefinition by URL, from the cache when current."""
    key = cache_key(profiles_dir, defs.base_version)
    path = cache_dir / f"snapshots-{key}.json"
    if path.is_file():
        cached: dict[str, list[dict[str, Any]]] = orjson.loads(path.read_bytes())
        return cached
    snaps = generate_all(defs, profiles_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for old in cache_dir.glob("snapshots-*.json"):
        old.unlink()
    tmp = path.with_suffix(".part")
    tmp.write_bytes(orjson.dumps(snaps))
    tmp.replace(path)
    return snaps


def generate_all(defs: Definitions, profiles_dir: Path) -> dict[str, list[dict[str, Any]]]:
    urls = []
    for p in package_files(profiles_dir):
        data = orjson.loads(p.read_bytes())
        if data.get("resourceType") == "StructureDefinition" and data.get("derivation") == "constraint":
            urls.append(data["url"])
    done: dict[str, list[dict[str, Any]]] = {}
    for url in urls:
        _generate(defs, url, done)
    return done


def generate_one(
    defs: Definitions,
    url: str,
    done: dict[str, list[dict[str, Any]]],
    problems: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The snapshot of one StructureDefinition (its own if it has one), its bases' put in ``done``.
    With ``problems``, a differential element that cannot be applied is left out and described there
    (what the reference validator does with another package's faulty profile) instead of raised."""
    return _generate(defs, url, done, problems)


def _generate(
    defs: Definitions, url: str, done: dict[str, list[dict[str, Any]]], problems: list[str] | None = None
) -> list[dict[str, Any]]:
    if url in done:
        return done[url]
    sd = defs.structure(url)
    if sd is None:
        raise SnapshotError(f"unknown StructureDefinition {url}")
    if "snapshot" in sd:
        elements: list[dict[str, Any]] = sd["snapshot"]["element"]
        return elements
    base_url = sd["baseDefinition"]
    if defs.structure(base_url) is None:
        raise SnapshotError(f"{url}: unknown base {base_url}")
    base = _generate(defs, base_url, done, problems)
    done[url] = generate(defs, base, sd["differential"]["element"], url, problems)
    return done[url]


def generate(
    defs: Definitions,
    base: list[dict[str, Any]],
    differential: list[dict[str, Any]],
    url: str = "",
    problems: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The snapshot of ``differential`` applied to a copy of ``base`` (see the module notes)."""
    elements = copy.deepcopy(base)
    for diff, eid in zip(differential, _ids(differential), strict=True):
        try:
            index = _ensure(defs, elements, eid, url)
        except SnapshotError as error:
            if problems is None:
                raise
            problems.append(str(error))
            continue
        _apply(elements[index], diff)
    return elements


def _ids(differential: list[dict[str, Any]]) -> list[str]:
    """Each differential element's id; R4 makes ``id`` optional, so a missing one is built from the
    path and the slices named on the way (``Patient.identifier`` after a ``sliceName: mrn`` element of
    that path is inside the slice: ``Patient.identifier:mrn.system``)."""
    ids: list[str] = []
    open_slices: dict[str, str] = {}  # path -> slice name of the latest element on that path
    for el in differential:
        path = str(el.get("path", ""))
        if "id" in el:
            plain = ".".join(part.split(":", 1)[0] for part in str(el["id"]).split("."))
            if plain != path:
                raise SnapshotError(f"element {el['id']}: its path is {path}, not {plain}")
            ids.append(str(el["id"]))
        else:
            parts = path.split(".")
            out = []
            for i, part in enumerate(parts):
                prefix = ".".join(parts[: i + 1])
                name = el.get("sliceName") if i == len(parts) - 1 else open_slices.get(prefix)
                out.append(f"{part}:{name}" if name else part)
            ids.append(".".join(out))
        for known in [p for p in open_slices if p == path or p.startswith(path + ".")]:
            del open_slices[known]
        if el.get("sliceName"):
            open_slices[path] = str(el["sliceName"])
    return ids


def _index(elements: list[dict[str, Any]], eid: str) -> int | None:
    for i, el in enumerate(elements):
        if el["id"] == eid:
            return i
    return None


def _split(eid: str) -> tuple[str, str]:
    """``A.b:s.c`` -> (``A.b:s``, ``c``): parent id and last segment (slice names contain no dot)."""
    parent, _, last = eid.rpartition(".")
    return parent, last


def _ensure(defs: Definitions, elements: list[dict[str, Any]], eid: str, url: str) -> int:
    found = _index(elements, eid)
    if found is not None:
        return found
    parent, last = _split(eid)
    if ":" in last:
        return _add_slice(defs, elements, eid, url)
    if not parent:
        raise SnapshotError(f"{url}: no element {eid}")
    pindex = _ensure(defs, elements, parent, url)
    choice = _choice(elements, parent, last)
    if choice is not None:
        return choice
    _unfold(defs, elements, pindex, url)
    found = _index(elements, eid)
    if found is None:
        raise SnapshotError(f"{url}: no element {eid}")
    return found


def _choice(elements: list[dict[str, Any]], parent: str, last: str) -> int | None:
    """``Extension.valueIdentifier`` names ``Extension.value[x]`` when Identifier is one of its types."""
    for i, el in enumerate(elements):
        eid = el["id"]
        if eid.startswith(parent + ".") and eid.endswith("[x]") and "." not in eid[len(parent) + 1 :]:
            stem = eid[len(parent) + 1 : -3]
            if last.startswith(stem) and last[len(stem) :] in {
                t["code"][:1].upper() + t["code"][1:] for t in el.get("type", [])
            }:
                return i
    return None


def _add_slice(defs: Definitions, elements: list[dict[str, Any]], eid: str, url: str) -> int:
    parent, last = _split(eid)
    name, _, slice_name = last.partition(":")
    sliced_id = f"{parent}.{name}" if parent else name
    sliced = _ensure(defs, elements, sliced_id, url)
    prefix = sliced_id + "."
    group = [elements[sliced]] + [
        e
        for e in elements[sliced + 1 :]
        if e["id"].startswith(prefix) and ":" not in e["id"][len(prefix) - 1 :]
    ]
    copies = copy.deepcopy(group)
    for c in copies:
        c["id"] = eid + c["id"][len(sliced_id) :]
    copies[0].pop("slicing", None)
    copies[0]["sliceName"] = slice_name
    end = sliced + 1
    while end < len(elements) and (
        elements[end]["id"].startswith(prefix) or elements[end]["id"].startswith(sliced_id + ":")
    ):
        end += 1
    elements[end:end] = copies
    return end


def _unfold(defs: Definitions, elements: list[dict[str, Any]], index: int, url: str) -> None:
    """Insert the children of the element's (single) data type after it, renamed under it."""
    el = elements[index]
    if any(e["id"].startswith(el["id"] + ".") for e in elements[index + 1 : index + 2]):
        return  # already unfolded
    ref = el.get("contentReference")
    if ref:
        _unfold_reference(defs, elements, index, str(ref).split("#", 1)[-1], url)
        return
    codes = {t["code"] for t in el.get("type", [])}
    if not codes and "." not in el["path"]:
        codes = {el["path"]}  # the root of a profile: its type is the profile's type
    if len(codes) != 1:
        raise SnapshotError(f"{url}: cannot unfold {el['id']} of types {sorted(codes)}")
    (code,) = codes
    type_sd = defs.structure(f"http://hl7.org/fhir/StructureDefinition/{code}")
    if type_sd is None:
        raise SnapshotError(f"{url}: unknown type {code} of {el['id']}")
    children = copy.deepcopy(type_sd["snapshot"]["element"][1:])
    for c in children:
        c["id"] = el["id"] + c["id"][len(code) :]
        c["path"] = el["path"] + c["path"][len(code) :]
    elements[index + 1 : index + 1] = children


def _unfold_reference(
    defs: Definitions, elements: list[dict[str, Any]], index: int, target: str, url: str
) -> None:
    """Insert the children of the element a ``contentReference`` names (``Parameters.parameter.part``
    -> ``Parameters.parameter``) as the base type defines them (not as this profile constrains
    them), renamed under the referring element."""
    el = elements[index]
    base = defs.structure("http://hl7.org/fhir/StructureDefinition/" + target.split(".", 1)[0])
    source = base["snapshot"]["element"] if base and "snapshot" in base else elements
    children = [copy.deepcopy(e) for e in source if e["id"].startswith(target + ".") and ":" not in e["id"]]
    if not children:
        raise SnapshotError(f"{url}: no element {target} for {el['id']}")
    for c in children:
        c["id"] = el["id"] + c["id"][len(target) :]
        c["path"] = el["path"] + c["path"][len(target) :]
    el.pop("contentReference", None)
    el["type"] = [{"code": "BackboneElement"}]
    elements[index + 1 : index + 1] = children


def _apply(target: dict[str, Any], diff: dict[str, Any]) -> None:
    for key, value in diff.items():
        if key in _NOT_INHERITED:
            continue
        if key == "constraint":
            target.setdefault("constraint", []).extend(copy.deepcopy(value))
        else:
            target[key] = copy.deepcopy(value)
    if "sliceName" in diff:
        target["sliceName"] = diff["sliceName"]
