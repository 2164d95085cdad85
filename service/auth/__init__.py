"""Authentication and authorization: tokens -> Principal (scopes, source systems, roles) -> the gate.

Pure functions and data: the API layer passes the header in and asks the gate about what enters
and what leaves.
"""

from __future__ import annotations

from service.auth.gate import require
from service.auth.principal import ANONYMOUS, ROLE_DEIDENTIFIED, ROLE_REGISTRY, Access, Principal
from service.auth.tokens import TokenVerifier

__all__ = [
    "ANONYMOUS",
    "ROLE_DEIDENTIFIED",
    "ROLE_REGISTRY",
    "Access",
    "Principal",
    "TokenVerifier",
    "require",
]
