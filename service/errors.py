"""Typed errors of the service; the API maps each to an OperationOutcome in one place."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    """One problem in a request: FHIR issue code, a human message, and where (FHIRPath or field path)."""

    code: str
    diagnostics: str
    expression: str | None = None
    severity: str = "error"


@dataclass
class ServiceError(Exception):
    """Base of every error a client can cause; ``status`` is the HTTP status it maps to."""

    issues: list[Issue] = field(default_factory=list)
    status: int = 400

    def __str__(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues)


class BadRequest(ServiceError):
    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues=issues, status=400)


class Unauthorized(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(issues=[Issue("login", message)], status=401)


class Forbidden(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(issues=[Issue("forbidden", message)], status=403)


class NotFound(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(issues=[Issue("not-found", message)], status=404)


class Unprocessable(ServiceError):
    """Well-formed input that breaks a schema, business rule or profile rule (422)."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues=issues, status=422)
