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


class Conflict(ServiceError):
    """The request contradicts what is stored (409)."""

    def __init__(self, message: str, expression: str | None = None) -> None:
        super().__init__(issues=[Issue("conflict", message, expression)], status=409)


class PreconditionFailed(ServiceError):
    """``If-Match`` names a version that is no longer current (412)."""

    def __init__(self, message: str) -> None:
        super().__init__(issues=[Issue("conflict", message)], status=412)


class UnsupportedMediaType(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(issues=[Issue("not-supported", message)], status=415)


class Unavailable(ServiceError):
    """A dependency (the database) is down; the client may retry after ``retry_after`` seconds (503)."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(issues=[Issue("transient", message)], status=503)
        self.retry_after = retry_after


class Gone(ServiceError):
    """The resource existed and was removed (410)."""

    def __init__(self, message: str) -> None:
        super().__init__(issues=[Issue("deleted", message)], status=410)


class TooLarge(ServiceError):
    """A request over a configured cost limit (413): the message names the limit and its setting."""

    def __init__(self, message: str, expression: str | None = None) -> None:
        super().__init__(issues=[Issue("too-costly", message, expression)], status=413)


class TooMany(ServiceError):
    """Too many of something at once for this client (429); retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(issues=[Issue("throttled", message)], status=429)
        self.retry_after = retry_after
