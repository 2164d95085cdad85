"""The gate for what enters: who may create, update and withdraw which cases (no Flask in here).

What a write does is decided by ``service.intake`` under the case's row lock; it asks the callback
built here, which holds the caller's grants and source systems:

- the source system first (403 naming it and how to bind a client), so no answer depends on whether
  a case of another hospital exists; a withdrawal of a case the caller may not even read is 404;
- a new case: ``c`` on every resource type of its mapped Bundle;
- a new version of an existing case, or reviving a withdrawn (entered-in-error) one: ``u`` on every
  type of the stored and of the new Bundle;
- a withdrawal (DELETE): ``d`` on every type of the stored Bundle;
- the same content again (nothing written): ``c`` on every type, or ``u`` on every type. This is FHIR's
  conditional create ("One Match: The server ignores the post and returns 200 OK", R4 3.1.0.8.1): a
  create-only client may resend its case and be answered with it. The answer is the canonical form
  of the content it sent, within its own source systems, so it reads nothing it did not have.
"""

from __future__ import annotations

from service.auth.gate import access, require_case_types, require_source_write
from service.auth.principal import Principal
from service.errors import Forbidden, NotFound
from service.intake import Authorize, CaseWrite, Change

CASE_TYPE = "Patient"
"""The type a request must hold some write scope on before its body is even read (cheap refusal)."""


def _granted(principal: Principal, action: str) -> bool:
    """Whether some grant allows ``action`` on Patient; a grant that cannot be enforced (refused, never
    widened) counts as none, so it cannot hide another action's grant."""
    try:
        return access(principal, CASE_TYPE, action).granted
    except Forbidden:
        return False


def require_writer(principal: Principal, *actions: str) -> None:
    """403 before any work unless one of ``actions`` is granted on Patient (a case is a patient's record)."""
    if not any(_granted(principal, action) for action in actions):
        wanted = " or ".join(f"system/{CASE_TYPE}.{a}" for a in actions)
        raise Forbidden(f"scope {wanted} (or broader) is required")


def case_writes(principal: Principal) -> Authorize:
    """The authorization ``service.intake`` calls for each case it is about to write."""

    def authorize(write: CaseWrite) -> None:
        if write.change is Change.WITHDRAW and not principal.may_read_source(write.source_system):
            raise NotFound(f"no case {write.ref}")
        require_source_write(principal, write.source_system)
        if write.change is Change.NONE:
            if not any(all(principal.allows(t, a) for t in write.types) for a in ("c", "u")):
                missing = sorted(t for t in write.types if not principal.allows(t, "c"))
                scopes = ", ".join(f"system/{t}.c" for t in missing)
                raise Forbidden(
                    f"this request touches whole cases: it needs {scopes} (or system/*.c), "
                    "or system/*.u on every type"
                )
            return
        require_case_types(principal, write.change.value, write.types)

    return authorize
