"""The one gate: every resource, case or row that leaves the service, and every write that enters it.

Type-level refusals are 403 (the scope is missing: nothing about the data is revealed). A single
resource or case outside the caller's restriction or source systems is answered like one that does
not exist (404), since ids derive from business identifiers and a 403 would confirm them. Resources
in a Bundle that the caller may not see are left out (with a warning where a Bundle says why).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.auth.principal import Access, Principal, Scope
from service.errors import Forbidden, NotFound
from service.mapping.spec import IDENTIFIER_SYSTEM, MappingError, split_identifier
from service.search import READ_TYPES, search_params
from service.store.resources import links

CASE_TYPES = READ_TYPES
"""A case is all of these: reading or writing it whole needs the action on each."""
_RESTRICTABLE = ("token", "reference")


def _checked(resource_type: str, access: Access) -> Access:
    """Restrictions the service can evaluate exactly (token and reference parameters of the type,
    matched on the same index rows as search); any other is refused, never ignored."""
    if access.scope is not Scope.SOME:
        return access
    known = {p.name: p.type for p in search_params().get(resource_type, ())}
    for restriction in access.restrictions:
        for name, value in restriction:
            if known.get(name) not in _RESTRICTABLE or not value:
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


def _value_matches(rows: list[tuple[str, str, str]], name: str, raw: str) -> bool:
    for item in raw.split(","):
        if "|" in item:
            system, _, code = item.partition("|")
            if any(p == name and s == system and v == code for p, s, v in rows):
                return True
        else:
            target_type, slash, target_id = item.rpartition("/")
            if any(p == name and v == target_id and (not slash or s == target_type) for p, s, v in rows):
                return True
    return False


def matches(resource: dict[str, Any], restriction: tuple[tuple[str, str], ...]) -> bool:
    """A resource meets every parameter of one restriction (token: system|code or code; reference:
    Type/id or id), read off the same rows the search index stores."""
    rows = links(resource)
    return all(_value_matches(rows, name, value) for name, value in restriction)


def source_of(resource: dict[str, Any]) -> str | None:
    """The source system (hospital) a resource belongs to, from its business identifier."""
    for ident in resource.get("identifier", []) or []:
        if isinstance(ident, dict) and ident.get("system") == IDENTIFIER_SYSTEM:
            try:
                return split_identifier(str(ident.get("value", "")))[0]
            except MappingError:
                return None
    return None


def visible(principal: Principal, resource: dict[str, Any], action: str = "r") -> bool:
    """May this resource leave for this caller (type, restriction and source system)?"""
    resource_type = str(resource.get("resourceType", ""))
    granted = access(principal, resource_type, action)
    if not granted.granted:
        return False
    if granted.scope is Scope.SOME and not any(matches(resource, r) for r in granted.restrictions):
        return False
    if principal.readable_sources is None:
        return True
    source = source_of(resource)
    return source is not None and principal.may_read_source(source)


def only_visible(principal: Principal, resources: Iterable[dict[str, Any]], action: str = "r") -> list[Any]:
    return [r for r in resources if visible(principal, r, action)]


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


def require_case_write(principal: Principal, source_system: str, action: str, types: Iterable[str]) -> None:
    """Writing one case: a source system the caller is bound to, and the action on every type written."""
    require_source_write(principal, source_system)
    require_case_types(principal, action, types)
