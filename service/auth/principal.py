"""Who is asking and what they may do: grants from scopes, the source systems they are bound to, roles.

A hospital's client is bound to its source systems (hospitals): it writes only cases of those, and
reads only those. Reading across hospitals is the ``registry`` role; de-identified registry extracts
are the ``deidentified`` role. Both come from the token (``ivclms_roles``) issued by the operator's
authorization server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from service.auth.scopes import Grant, parse_scopes
from service.errors import Forbidden
from service.model.fields import fold_source

ROLE_REGISTRY = "registry"
"""Read every source system's cases (FHIR read side, /cases, identified registry extracts)."""
ROLE_DEIDENTIFIED = "deidentified"
"""Read de-identified registry extracts and summaries only (pseudonyms keyed per recipient)."""
ROLES = (ROLE_REGISTRY, ROLE_DEIDENTIFIED)
EVERY_SOURCE = "*"


class Scope(Enum):
    ALL = "all"
    SOME = "some"
    NONE = "none"


@dataclass(frozen=True)
class Access:
    """What a principal may do with one resource type: everything, only resources matching one of
    ``restrictions`` (each a conjunction of search parameters), or nothing."""

    scope: Scope
    restrictions: tuple[tuple[tuple[str, str], ...], ...] = ()

    @property
    def granted(self) -> bool:
        return self.scope is not Scope.NONE


WHOLE = Access(Scope.ALL)
DENIED = Access(Scope.NONE)


@dataclass(frozen=True)
class Principal:
    subject: str
    """Human-readable caller for audit records and case version authors."""
    scopes: frozenset[str]
    sources: frozenset[str] | None = frozenset()
    """Source systems this caller may write (and, without the registry role, read); None: every one."""
    roles: frozenset[str] = frozenset()
    owner: str = ""
    """Stable key of this caller for what it owns (exports, idempotency answers): issuer and the kind of
    claim included, so a client id can never pass for a user's subject."""
    client: str = ""
    """The recipient: issuer and OAuth client (``iss#client_id:<id>``), or issuer and subject when the
    token names no client (``iss#sub:<sub>``), so a subject can never pass for a client; the key of
    per-recipient pseudonyms."""
    grants: tuple[Grant, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grants", parse_scopes(self.scopes))
        if self.sources is not None:  # compared as cases store them (lower-cased)
            object.__setattr__(self, "sources", frozenset(fold_source(s) for s in self.sources))
        if not self.owner:
            object.__setattr__(self, "owner", f"sub:{self.subject}")

    def access(self, resource_type: str, action: str) -> Access:
        """The access one action on one type has; raises Forbidden for a restriction that cannot be
        enforced (refused, never widened)."""
        applicable = [g for g in self.grants if g.covers(resource_type, action)]
        if any(not g.restriction and g.unsupported is None for g in applicable):
            return WHOLE
        broken = [g for g in applicable if g.unsupported is not None]
        if broken:
            raise Forbidden(f"{broken[0].unsupported}; ask for a scope without it")
        restricted = tuple(g.restriction for g in applicable)
        return Access(Scope.SOME, restricted) if restricted else DENIED

    def allows(self, resource_type: str, action: str) -> bool:
        """True when a scope grants ``action`` on every resource of ``resource_type``."""
        applicable = [g for g in self.grants if g.covers(resource_type, action)]
        return any(not g.restriction and g.unsupported is None for g in applicable)

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def deidentified_only(self) -> bool:
        """A de-identified recipient: its token reaches de-identified registry pulls and nothing else
        (no FHIR read side, no /cases, no counts that could be bisected on identified values)."""
        return self.has_role(ROLE_DEIDENTIFIED) and not self.has_role(ROLE_REGISTRY)

    @property
    def readable_sources(self) -> frozenset[str] | None:
        """Source systems whose records this caller may read (None: every one)."""
        return None if self.has_role(ROLE_REGISTRY) else self.sources

    def may_write_source(self, source_system: str) -> bool:
        return self.sources is None or fold_source(source_system) in self.sources

    def may_read_source(self, source_system: str) -> bool:
        readable = self.readable_sources
        return readable is None or fold_source(source_system) in readable


ANONYMOUS = Principal(
    subject="anonymous (auth disabled)",
    scopes=frozenset({"system/*.cruds"}),
    sources=None,
    roles=frozenset(ROLES),
    owner="anonymous",
    client="anonymous",
)
