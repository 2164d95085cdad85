"""The base R4 Bundle invariants and ext-1 in Python, with the exact meaning of their FHIRPath.

A Bundle-level invariant reads every entry, so fhirpathpy's memo (keyed on what an expression names)
misses on every Bundle and the evaluation costs most of the time of validating one. Each function
here answers what the FHIRPath expression answers, including FHIRPath's three-valued logic (an
empty result holds); ``None`` means "not a shape this function reads" and the caller falls back to
fhirpathpy. Each is used only for the exact expression text it implements, so a changed definition
falls back too. ext-1 sits on every Extension and its memo key (the extension's JSON) costs as much
as its evaluation, as most extensions differ. ``tests/unit/validation/test_native.py`` compares both
on every example Bundle and mutations of each rule, and ext-1 on every extension of the corpus and
mutants of them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fhirpathpy.models import models

from service.validation.xhtml import problems as xhtml_problems

Check = Callable[[dict[str, Any]], bool | None]

_REQUEST_TYPES = frozenset({"batch", "transaction", "history"})
_RESPONSE_TYPES = frozenset({"batch-response", "transaction-response", "history"})


def _exists(node: dict[str, Any], name: str) -> bool:
    return node.get(name) not in (None, [], {})


def _type(bundle: dict[str, Any]) -> str | None:
    value = bundle.get("type")
    return value if isinstance(value, str) else None


def _entries(bundle: dict[str, Any]) -> list[dict[str, Any]] | None:
    entries = bundle.get("entry", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        return None
    return entries


def _bdl1(bundle: dict[str, Any]) -> bool | None:
    kind = _type(bundle)
    return not (_exists(bundle, "total") and kind is not None and kind not in ("searchset", "history"))


def _bdl2(bundle: dict[str, Any]) -> bool | None:
    entries = _entries(bundle)
    if entries is None:
        return None
    kind = _type(bundle)
    return not (any(_exists(e, "search") for e in entries) and kind is not None and kind != "searchset")


def _all_match(bundle: dict[str, Any], name: str, types: frozenset[str]) -> bool | None:
    """``entry.all(<name>.exists() = (%resource.type = ... or ...))``: an absent type makes every
    comparison empty, and ``all()`` is false on an empty criterion."""
    entries = _entries(bundle)
    if entries is None:
        return None
    kind = _type(bundle)
    if kind is None:
        return not entries
    return all(_exists(e, name) == (kind in types) for e in entries)


def _bdl3(bundle: dict[str, Any]) -> bool | None:
    return _all_match(bundle, "request", _REQUEST_TYPES)


def _bdl4(bundle: dict[str, Any]) -> bool | None:
    return _all_match(bundle, "response", _RESPONSE_TYPES)


def _bdl7(bundle: dict[str, Any]) -> bool | None:
    entries = _entries(bundle)
    if entries is None:
        return None
    kind = _type(bundle)
    if kind == "history":
        return True
    keys: list[str] = []
    for entry in entries:
        url = entry.get("fullUrl")
        if url is None:
            continue
        resource = entry.get("resource")
        meta = resource.get("meta") if isinstance(resource, dict) else None
        version = meta.get("versionId") if isinstance(meta, dict) else None
        if not isinstance(url, str) or not isinstance(version, str | None):
            return None
        keys.append(url + (version or ""))
    distinct = len(set(keys)) == len(keys)
    return distinct or kind is None  # `empty or false` is empty, which holds


def _document(bundle: dict[str, Any], check: Callable[[], bool | None]) -> bool | None:
    """``type = 'document' implies ...``: false only when the type is document and the rest false."""
    return True if _type(bundle) != "document" else check()


def _bdl9(bundle: dict[str, Any]) -> bool | None:
    def rest() -> bool | None:
        identifier = bundle.get("identifier")
        if identifier is None:
            return False
        if not isinstance(identifier, dict):
            return None
        return _exists(identifier, "system") and _exists(identifier, "value")

    return _document(bundle, rest)


def _bdl10(bundle: dict[str, Any]) -> bool | None:
    def rest() -> bool | None:
        stamp = bundle.get("timestamp")
        return stamp is not None and not isinstance(stamp, dict | list)

    return _document(bundle, rest)


def _first_is(bundle: dict[str, Any], kind: str, resource_type: str) -> bool | None:
    """``type = '<kind>' implies entry.first().resource.is(<type>)``: no first resource is empty (holds)."""
    if _type(bundle) != kind:
        return True
    entries = _entries(bundle)
    if entries is None:
        return None
    if not entries or entries[0].get("resource") is None:
        return True
    resource = entries[0]["resource"]
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return None
    return bool(resource["resourceType"] == resource_type)


def _bdl11(bundle: dict[str, Any]) -> bool | None:
    return _first_is(bundle, "document", "Composition")


def _bdl12(bundle: dict[str, Any]) -> bool | None:
    return _first_is(bundle, "message", "MessageHeader")


def _bdl5(entry: dict[str, Any]) -> bool | None:
    return _exists(entry, "resource") or _exists(entry, "request") or _exists(entry, "response")


def _bdl8(entry: dict[str, Any]) -> bool | None:
    url = entry.get("fullUrl")
    if url is None:
        return True
    return "/_history/" not in url if isinstance(url, str) else None


_VALUE_TYPES: frozenset[str] = frozenset(models["r4"]["choiceTypePaths"]["Extension.value"])
"""The types fhirpathpy's R4 model gives ``Extension.value[x]``: it reads ``value`` on an Extension as
the first of ``value<Type>`` (or ``_value<Type>``) present; any other ``value...`` key it does not see."""


def _ext1(extension: dict[str, Any]) -> bool | None:
    """ext-1 ``extension.exists() != value.exists()`` on a node of type Extension: sub-extensions or a
    value, not both, not neither. Shapes where fhirpathpy's reading is not simply "the key holds
    something" (a ``_`` key, an empty or non-list ``extension``, a list or null value) fall back."""
    has_value = False
    for key, item in extension.items():
        if key[:1] == "_":
            return None
        if key[:5] == "value" and key[5:] in _VALUE_TYPES:
            if item is None or isinstance(item, list):
                return None
            has_value = True
    sub = extension.get("extension")
    if sub is not None and (not isinstance(sub, list) or not sub or None in sub):
        return None
    return (sub is not None) != has_value


CHECKS: dict[tuple[str, str], Check] = {
    ("bdl-1", "total.empty() or (type = 'searchset') or (type = 'history')"): _bdl1,
    ("bdl-2", "entry.search.empty() or (type = 'searchset')"): _bdl2,
    (
        "bdl-3",
        "entry.all(request.exists() = (%resource.type = 'batch' or %resource.type = 'transaction' or "
        "%resource.type = 'history'))",
    ): _bdl3,
    (
        "bdl-4",
        "entry.all(response.exists() = (%resource.type = 'batch-response' or %resource.type = "
        "'transaction-response' or %resource.type = 'history'))",
    ): _bdl4,
    (
        "bdl-7",
        "(type = 'history') or entry.where(fullUrl.exists()).select(fullUrl&resource.meta.versionId)"
        ".isDistinct()",
    ): _bdl7,
    ("bdl-9", "type = 'document' implies (identifier.system.exists() and identifier.value.exists())"): _bdl9,
    ("bdl-10", "type = 'document' implies (timestamp.hasValue())"): _bdl10,
    ("bdl-11", "type = 'document' implies entry.first().resource.is(Composition)"): _bdl11,
    ("bdl-12", "type = 'message' implies entry.first().resource.is(MessageHeader)"): _bdl12,
    ("bdl-5", "resource.exists() or request.exists() or response.exists()"): _bdl5,
    ("bdl-8", "fullUrl.contains('/_history/').not()"): _bdl8,
    ("ext-1", "extension.exists() != value.exists()"): _ext1,
}
"""(constraint key, its exact R4 expression) -> the Python check of it."""

TYPE_PATHS: dict[tuple[str, str], str] = {("ext-1", "extension.exists() != value.exists()"): "Extension"}
"""A check here holds only on a node of this FHIRPath type: on another, ``value`` is not the choice
``value[x]`` (fhirpathpy reads the type's own elements), so the caller falls back to fhirpathpy."""


def native_check(key: str, expression: str, node: Any, type_path: str | None = None) -> bool | None:
    """The invariant's verdict from Python, or None when it has no Python form (or not for this node)."""
    check = CHECKS.get((key, expression))
    if check is None or not isinstance(node, dict):
        return None
    wanted = TYPE_PATHS.get((key, expression))
    if wanted is not None and type_path != wanted:
        return None
    return check(node)


# ---- invariants fhirpathpy cannot evaluate, or evaluates otherwise than the reference validator ------


def _txt(div: Any, _root: Any) -> bool | None:
    """``htmlChecks()`` (txt-1, txt-2): FHIR's narrative rules (see ``xhtml.problems``)."""
    return not xhtml_problems(div) if isinstance(div, str) else None


def _dom3(resource: Any, _root: Any) -> bool | None:
    """dom-3: every contained resource is referenced from elsewhere in the resource (``#id`` as a
    reference, canonical or uri) or itself refers to its container (``#``)."""
    if not isinstance(resource, dict):
        return None
    contained = resource.get("contained")
    if not isinstance(contained, list):
        return True
    pointers = set(_strings(resource))
    for item in contained:
        if not isinstance(item, dict):
            return None
        cid = item.get("id")
        if "#" in set(_strings(item)):
            continue
        if not isinstance(cid, str) or "#" + cid not in pointers:
            return False
    return True


def _strings(data: Any) -> Any:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from _strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)


_EVENT_CODES = frozenset({"C", "CM", "CD", "CV"})


def _tim9(repeat: Any, _root: Any) -> bool | None:
    """tim-9: an offset needs a ``when`` that is not a meal code (C, CM, CD, CV)."""
    if not isinstance(repeat, dict):
        return None
    if repeat.get("offset") is None:
        return True
    when = repeat.get("when")
    when = when if isinstance(when, list) else [when] if when is not None else []
    return bool(when) and not any(w in _EVENT_CODES for w in when)


def _per1(period: Any, _root: Any) -> bool | None:
    """per-1 ``start <= end``. Values of different precision that agree as far as both go (``2023-06-21``
    and ``2023-06-21T06:20:00Z``) make FHIRPath's comparison empty; the reference validator counts an
    empty result as a failure, and so does this."""
    if not isinstance(period, dict):
        return None
    start, end = period.get("start"), period.get("end")
    if not isinstance(start, str) or not isinstance(end, str):
        return True
    return _date_le(start, end)


def _date_le(start: str, end: str) -> bool:
    if "T" in start and "T" in end:
        try:
            first = datetime.fromisoformat(start.replace("Z", "+00:00"))
            last = datetime.fromisoformat(end.replace("Z", "+00:00"))
        except ValueError:
            return True  # not a dateTime: the type check reports it
        return bool(first <= last) if (first.tzinfo is None) == (last.tzinfo is None) else False
    a, b = start.split("T", 1)[0], end.split("T", 1)[0]
    common = min(len(a), len(b))
    if a[:common] != b[:common]:
        return a[:common] < b[:common]
    return start == end  # equal as far as both go: comparable only when equal precision


def _que12(item: Any, _root: Any) -> bool | None:
    """que-12 as the reference validator evaluates it: R4 writes ``enableWhen.count() > 2``, the intent
    (and R4's own text: "If there are more than one enableWhen") is ``> 1``."""
    if not isinstance(item, dict):
        return None
    when = item.get("enableWhen")
    count = len(when) if isinstance(when, list) else (0 if when is None else 1)
    return count <= 1 or item.get("enableBehavior") is not None


def _ref1(reference: Any, root: Any) -> bool | None:
    """ref-1: a ``#id`` reference names a resource contained in the root resource (``#`` alone is the
    container itself)."""
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if not isinstance(ref, str) or not ref.startswith("#") or ref == "#":
        return True
    contained = root.get("contained") if isinstance(root, dict) else None
    ids = {c.get("id") for c in contained if isinstance(c, dict)} if isinstance(contained, list) else set()
    return ref[1:] in ids


def _ctm1(participant: Any, root: Any) -> bool | None:
    """ctm-1: ``onBehalfOf`` only when ``member`` is a Practitioner. ``resolve()`` is answered for
    ``#id`` references to resources contained in the root resource; any other reference counts as
    unresolved, which the expression itself lets hold (``iif(empty(), true, ...)``)."""
    if not isinstance(participant, dict):
        return None
    if participant.get("onBehalfOf") is None:
        return True
    member = participant.get("member")
    ref = member.get("reference") if isinstance(member, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#") or not isinstance(root, dict):
        return True
    contained = root.get("contained")
    for item in contained if isinstance(contained, list) else []:
        if isinstance(item, dict) and item.get("id") == ref[1:]:
            return bool(item.get("resourceType") == "Practitioner")
    return True


RootCheck = Callable[[Any, Any], bool | None]

ALWAYS: dict[tuple[str, str], RootCheck] = {
    ("txt-1", "htmlChecks()"): _txt,
    ("txt-2", "htmlChecks()"): _txt,
    (
        "dom-3",
        "contained.where((('#'+id in (%resource.descendants().reference | "
        "%resource.descendants().as(canonical) | %resource.descendants().as(uri) | "
        "%resource.descendants().as(url))) or descendants().where(reference = '#').exists() or "
        "descendants().where(as(canonical) = '#').exists() or descendants().where(as(canonical) = '#')"
        ".exists()).not()).trace('unmatched', id).empty()",
    ): _dom3,
    (
        "tim-9",
        "offset.empty() or (when.exists() and ((when in ('C' | 'CM' | 'CD' | 'CV')).not()))",
    ): _tim9,
    ("per-1", "start.hasValue().not() or end.hasValue().not() or (start <= end)"): _per1,
    ("que-12", "enableWhen.count() > 2 implies enableBehavior.exists()"): _que12,
    (
        "ref-1",
        "reference.startsWith('#').not() or (reference.substring(1).trace('url') in "
        "%rootResource.contained.id.trace('ids'))",
    ): _ref1,
    (
        "ctm-1",
        "onBehalfOf.exists() implies (member.resolve().iif(empty(), true, ofType(Practitioner).exists()))",
    ): _ctm1,
}
"""Invariants always answered in Python: fhirpathpy cannot evaluate them (``htmlChecks()``, dom-3's
``as(canonical)``, tim-9's ``in`` on a list, ctm-1's ``resolve()``) or they need the reference
validator's reading (per-1 on mixed precision, que-12's R4 typo, ref-1 between contained resources)."""


def required_check(key: str, expression: str, node: Any, root: Any) -> bool | None:
    """The verdict of an ``ALWAYS`` invariant, or None when the invariant is not one of them."""
    check = ALWAYS.get((key, expression))
    return None if check is None else check(node, root)
