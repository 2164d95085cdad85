"""The one gate: every resource, case or row that leaves the service, and every write that enters it.

Type-level refusals are 403 (the scope is missing: nothing about the data is revealed). A single
resource or case outside the caller's restriction or source systems is answered like one that does
not exist (404), since ids derive from business identifiers and a 403 would confirm them. Resources
in a Bundle that the caller may not see are left out (with a warning where a Bundle says why).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from service.auth.principal import Access, Principal, Scope
from service.errors import Forbidden, NotFound
from service.mapping.spec import IDENTIFIER_SYSTEM, MappingError, split_identifier
from service.search import READ_TYPES, Restriction, Visibility, search_params
from service.store.resources import links

CASE_TYPES = READ_TYPES
"""A case is all of these: reading or writing it whole needs the action on each."""
_RESTRICTABLE = ("token", "reference")


def _enforceable(kind: str | None, value: str) -> bool:
    """A token or reference restriction value the search index can match exactly (the same syntax
    ``search`` accepts: token ``system|code``, ``|code`` or ``code``; reference ``Type/id`` or ``id``)."""
    if kind not in _RESTRICTABLE or not value:
        return False
    for item in value.split(","):
        if kind == "token":
            if not item.partition("|")[2 if "|" in item else 0]:
                return False
        else:
            target_type, slash, target_id = item.rpartition("/")
            if not target_id or (slash and target_type not in READ_TYPES):
                return False
    return True


def _checked(resource_type: str, access: Access) -> Access:
    """Restrictions the service can evaluate exactly (token and reference parameters of the type,
    matched on the same index rows as search); any other is refused, never ignored."""
    if access.scope is not Scope.SOME:
        return access
    known = {p.name: p.type for p in search_params().get(resource_type, ())}
    for restriction in access.restrictions:
        for name, value in restriction:
            if name == "_id" or not _enforceable(known.get(name), value):
                raise Forbidden(
                    f"scope restriction {name}={value} on {resource_type} cannot be enforced by this "
                    "server (token and reference search parameters only); ask for a scope without it"
                )
    return access


def access(principal: Principal, resource_type: str, action: str) -> Access:
    return _checked(resource_type, principal.access(resource_type, action))


def require(principal: Principal, resource_type: str, action: str) -> Access:
    """403 unless some scope grants ``action`` on ``resource_type``; returns what it grants."""
    found = access(principal, resource_type, action)
    if not found.granted:
        raise Forbidden(f"scope system/{resource_type}.{action} (or broader) is required")
    return found


def _value_matches(rows: list[tuple[str, str, str]], name: str, raw: str, kind: str | None) -> bool:
    """The rows ``search`` would match for ``name=raw`` (service.search ``_token``/``_reference``)."""
    for item in raw.split(","):
        if kind == "token":
            system, bar, code = item.partition("|") if "|" in item else ("", "", item)
            if any(p == name and v == code and (not bar or s == system) for p, s, v in rows):
                return True
        else:
            target_type, slash, target_id = item.rpartition("/")
            if any(p == name and v == target_id and (not slash or s == target_type) for p, s, v in rows):
                return True
    return False


def matches(resource: dict[str, Any], restriction: Restriction) -> bool:
    """A resource meets every parameter of one restriction (token: system|code or code; reference:
    Type/id or id), read off the same rows the search index stores."""
    rows = links(resource)
    kinds = {p.name: p.type for p in search_params().get(str(resource.get("resourceType", "")), ())}
    return all(_value_matches(rows, name, value, kinds.get(name)) for name, value in restriction)


def within(limits: Visibility, resource: dict[str, Any], source: str | None) -> bool:
    """A resource meets ``limits`` (one restriction of each set, and its source system)."""
    if limits.sources is not None and (source is None or source not in limits.sources):
        return False
    return all(any(matches(resource, r) for r in one) for one in limits.restrictions)


def limits(principal: Principal, resource_type: str, actions: Sequence[str] = ("r",)) -> Visibility:
    """403 unless every action is granted on the type; else what of it the caller may get, as filters
    a query applies (the restrictions of each action's grant, and the readable source systems)."""
    restrictions = []
    for action in actions:
        granted = require(principal, resource_type, action)
        if granted.scope is Scope.SOME:
            restrictions.append(granted.restrictions)
    return Visibility(tuple(restrictions), principal.readable_sources)


def source_of(resource: dict[str, Any]) -> str | None:
    """The source system (hospital) a resource belongs to, from its business identifier."""
    for ident in resource.get("identifier", []) or []:
        if isinstance(ident, dict) and ident.get("system") == IDENTIFIER_SYSTEM:
            try:
                return split_identifier(str(ident.get("value", "")))[0]
            except MappingError:
                return None
    return None


def visible(
    principal: Principal, resource: dict[str, Any], action: str = "r", *, source: str | None = None
) -> bool:
    """May this resource leave for this caller (type, restriction and source system)? ``source``:
    the source system of its case when the caller knows it (a Provenance carries no business
    identifier), else read off the resource's business identifier."""
    resource_type = str(resource.get("resourceType", ""))
    granted = access(principal, resource_type, action)
    if not granted.granted:
        return False
    if granted.scope is Scope.SOME and not any(matches(resource, r) for r in granted.restrictions):
        return False
    if principal.readable_sources is None:
        return True
    found = source if source is not None else source_of(resource)
    return found is not None and principal.may_read_source(found)


def visible_text(
    principal: Principal, resource_type: str, text: str, source: str | None, action: str = "r"
) -> bool:
    """``visible`` for stored JSON text, parsed only when a restriction must be checked (or the source
    system is not given and must be read off the business identifier)."""
    granted = access(principal, resource_type, action)
    if not granted.granted:
        return False
    if granted.scope is Scope.ALL and (principal.readable_sources is None or source is not None):
        return source is None or principal.may_read_source(source)
    resource = orjson.loads(text)
    return resource.get("resourceType") == resource_type and visible(
        principal, resource, action, source=source
    )


def require_case_types(principal: Principal, action: str, types: Iterable[str] = CASE_TYPES) -> None:
    """A whole case (or its JSON) needs ``action`` on every resource type it holds, unrestricted."""
    missing = sorted({t for t in types if not principal.allows(t, action)})
    if missing:
        scopes = ", ".join(f"system/{t}.{action}" for t in missing)
        raise Forbidden(f"this request touches whole cases: it needs {scopes} (or system/*.{action})")


def require_case_read(principal: Principal, source_system: str, what: str) -> None:
    """Reading one case: every type readable, and its source system within the caller's."""
    require_case_types(principal, "r")
    if not principal.may_read_source(source_system):
        raise NotFound(f"no case {what}")


def require_source_write(principal: Principal, source_system: str) -> None:
    """403 unless the caller is bound to ``source_system`` (checked first, before anything that
    depends on whether a case exists, so a refusal never confirms one)."""
    if not principal.may_write_source(source_system):
        raise Forbidden(
            f"this client may not write cases of source system {source_system!r} "
            "(bind it with the ivclms_sources claim or IVCLMS_AUTH_CLIENT_SOURCES)"
        )
