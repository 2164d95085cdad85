"""SMART App Launch v2 system scopes, parsed once per token into grants.

``system/Observation.rs?code=http://loinc.org|21889-1`` grants read and search on Observations whose
``code`` is that LOINC code, nothing more (SMART v2 "Finer-grained resource constraints using
search parameters"). A restriction the service cannot enforce is never widened: the grant carries
the reason and the gate refuses the request with 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

ACTIONS = "cruds"
_V1 = {"read": frozenset("rs"), "write": frozenset("cud"), "*": frozenset(ACTIONS)}
ANY_TYPE = "*"


@dataclass(frozen=True)
class Grant:
    """What one scope allows: ``actions`` on ``resource_type`` (``*``: every type), optionally only on
    resources that match every ``(search parameter, value)`` of ``restriction``."""

    resource_type: str
    actions: frozenset[str]
    restriction: tuple[tuple[str, str], ...] = ()
    unsupported: str | None = None
    """Why the restriction cannot be enforced here (the gate then refuses instead of widening)."""

    def covers(self, resource_type: str, action: str) -> bool:
        return self.resource_type in (ANY_TYPE, resource_type) and action in self.actions


def parse_scope(scope: str) -> Grant | None:
    """A ``system/`` resource scope as a grant; any other scope (openid, patient/, launch) grants
    nothing here and yields None."""
    context, slash, rest = scope.partition("/")
    if context != "system" or not slash or "." not in rest:
        return None
    resource_type, _, perms_and_query = rest.partition(".")
    perms, question, query = perms_and_query.partition("?")
    actions = _V1.get(perms)
    if actions is None:
        if not perms or not set(perms) <= set(ACTIONS):
            return None
        actions = frozenset(perms)
    if not resource_type or not (resource_type == ANY_TYPE or resource_type.isalnum()):
        return None
    if not question:
        return Grant(resource_type, actions)
    try:
        pairs = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        return Grant(resource_type, actions, (), unsupported=f"{scope!r}: the restriction is not a query")
    if perms in _V1:
        return Grant(resource_type, actions, pairs, unsupported=f"{scope!r}: v1 scopes take no restriction")
    if resource_type == ANY_TYPE:
        reason = f"{scope!r}: a restriction needs a resource type, not *"
        return Grant(resource_type, actions, pairs, unsupported=reason)
    return Grant(resource_type, actions, pairs)


def parse_scopes(scopes: frozenset[str] | set[str] | tuple[str, ...]) -> tuple[Grant, ...]:
    found = (parse_scope(s) for s in sorted(scopes))
    return tuple(g for g in found if g is not None)
