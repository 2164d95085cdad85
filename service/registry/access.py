"""Who may pull what from the registry side (issue 12, findings 12 and 13).

- An **identified** extract (``deidentified`` not asked for) is the ``registry`` role's: it names
  patients and hospitals. A **de-identified** extract is the ``deidentified`` role's (or the
  ``registry`` role's). The **summary** aggregates, but over filters that can narrow it to a few
  cases, so it needs one of the two roles as well; a caller without the ``registry`` role gets it
  under the de-identified rules (below).
- Every pull is a search over whole cases: it needs ``s`` on every case type (``system/*.s``,
  ``system/*.rs``, ``system/*.read``), as ``GET /cases`` does; a scope on one type is not enough. An
  identified extract hands out whole records, so it needs ``r`` too (as a FHIR search does).
- **Consent, privacy by default**: only cases whose ``registry_consent`` is ``yes`` leave, unless the
  request names other consent values, which only the ``registry`` role may do.
- **Source systems**: a caller without the ``registry`` role reads only its own source systems
  (``Principal.readable_sources``: the ``ivclms_sources`` claim or the operator's client table).
- **De-identified rules** for the filters: they may only select on what the de-identified output
  shows (coarsened), or a client could bisect a filter to learn what de-identification removed.
  ``diagnosed_from``/``diagnosed_to`` take a year (the output keeps the diagnosis year only);
  ``since`` takes a cursor the service signed (``X-Extract-As-Of`` of an earlier pull by the same
  recipient), never a chosen instant; ``case`` (it would tie pseudonyms to case ids) and
  ``institution`` (it would name the hospital of a source pseudonym) are refused.

Pure: the API layer passes the principal and what the request asked for.
"""

from __future__ import annotations

from service.auth.gate import require_case_types
from service.auth.principal import ROLE_DEIDENTIFIED, ROLE_REGISTRY, Principal
from service.errors import Forbidden, Issue, ServiceError

CONSENTED: tuple[str, ...] = ("yes",)
"""The consent codes a pull selects when the request names none."""
PULL_ACTION = "s"
"""The scope action every registry pull needs on every case type."""
REFUSED_WHEN_DEIDENTIFIED: dict[str, str] = {
    "case": "it would tie pseudonyms to case ids",
    "institution": "the de-identified output does not name institutions",
}
"""Filters a de-identified pull may not use, and why."""


def _role_needed(what: str, *roles: str, hint: str = "") -> Forbidden:
    named = " or ".join(repr(r) for r in roles)
    return Forbidden(f"{what} need the role {named} (ivclms_roles claim of the access token){hint}")


def _bound(principal: Principal) -> None:
    """A caller bound to no source system and without the registry role would get empty pulls; say so."""
    if principal.readable_sources == frozenset():
        raise Forbidden(
            "this token is bound to no source system (ivclms_sources claim, or IVCLMS_AUTH_CLIENT_SOURCES "
            "for its client) and has no 'registry' role: there is nothing it may pull"
        )


def extract_is_deidentified(principal: Principal, deidentified: bool) -> bool:
    """Check the caller may pull the asked form; returns whether it is the de-identified one."""
    require_case_types(principal, PULL_ACTION)
    _bound(principal)
    if deidentified:
        if not (principal.has_role(ROLE_DEIDENTIFIED) or principal.has_role(ROLE_REGISTRY)):
            raise _role_needed("de-identified registry extracts", ROLE_DEIDENTIFIED, ROLE_REGISTRY)
        return True
    if not principal.has_role(ROLE_REGISTRY):
        hint = "; this token may ask for deidentified=true" if principal.has_role(ROLE_DEIDENTIFIED) else ""
        raise _role_needed("identified registry extracts", ROLE_REGISTRY, hint=hint)
    # Identified rows are whole records read in full: read as well as search, like a FHIR search.
    require_case_types(principal, "r")
    return False


def summary_is_deidentified(principal: Principal) -> bool:
    """Check the caller may read the summary; True when the de-identified rules apply to it."""
    require_case_types(principal, PULL_ACTION)
    _bound(principal)
    if principal.has_role(ROLE_REGISTRY):
        return False
    if not principal.has_role(ROLE_DEIDENTIFIED):
        raise _role_needed("registry summaries", ROLE_DEIDENTIFIED, ROLE_REGISTRY)
    return True


def consent(principal: Principal, requested: tuple[str, ...]) -> tuple[str, ...]:
    """The consent codes a pull selects: ``yes`` unless the request names others, which needs the
    ``registry`` role (403 naming it and the parameter)."""
    if not requested:
        return CONSENTED
    if set(requested) - set(CONSENTED) and not principal.has_role(ROLE_REGISTRY):
        message = (
            f"consent: cases without registry consent leave only for the role {ROLE_REGISTRY!r} "
            "(ivclms_roles claim of the access token); ask for consent=yes or leave consent out"
        )
        raise ServiceError([Issue("forbidden", message, "consent")], status=403)
    return requested


def sources(principal: Principal) -> frozenset[str] | None:
    """The source systems a pull may read (None: every one)."""
    return principal.readable_sources
