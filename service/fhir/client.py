"""The one client for the external FHIR R4 server.

A ``requests.Session`` with timeouts everywhere, retries only on idempotent calls (GET, PUT, DELETE and
conditional-update transactions the caller marks idempotent), and HTTP statuses turned into typed
exceptions that carry the server's OperationOutcome.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from requests.auth import AuthBase, HTTPBasicAuth

from service.settings import PREFIX, Settings, SettingsError

FHIR_JSON = "application/fhir+json"
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class FhirError(Exception):
    """Base of every failure talking to the FHIR server."""

    def __init__(
        self, message: str, status: int | None = None, outcome: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


class FhirUnavailable(FhirError):
    """Network error, timeout, 429 or 5xx: worth retrying later."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        outcome: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status, outcome)
        self.retry_after = retry_after


class FhirRejected(FhirError):
    """A 4xx answer: the request itself is wrong; retrying the same request will not help."""


class FhirNotFound(FhirRejected):
    pass


class FhirTokenRefused(FhirRejected):
    """The token endpoint refused the client's credentials (``status`` is the token endpoint's): nothing
    was sent to the FHIR server, so this says nothing about the request's content."""


class FhirConflict(FhirRejected):
    """409 or 412: a concurrent change on the server."""


class BearerAuth(AuthBase):
    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


class _Unauthenticated(AuthBase):
    """For the token request itself: None would fall back to the session's auth, which is this token."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


_NO_AUTH = _Unauthenticated()
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_S = 300
"""SMART Backend Services: ``exp`` no more than five minutes ahead."""


def client_assertion(
    client_id: str, token_url: str, key: Any, algorithm: str, key_id: str
) -> Callable[[], str]:
    """A signer of fresh SMART Backend Services client assertions (RFC 7523), one per token request."""

    def sign() -> str:
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": token_url,
            "exp": int(time.time()) + ASSERTION_LIFETIME_S,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": key_id, "typ": "JWT"})

    return sign


class ClientCredentialsAuth(AuthBase):
    """OAuth2 client credentials, with a secret (HTTP Basic) or a signed client assertion (SMART Backend
    Services); the token is fetched lazily and renewed a minute before it expires."""

    def __init__(
        self,
        token_url: str,
        scope: str,
        session: requests.Session,
        timeout: float,
        *,
        secret: tuple[str, str] | None = None,
        assertion: Callable[[], str] | None = None,
    ) -> None:
        if (secret is None) == (assertion is None):
            raise ValueError("one of secret and assertion")
        self._token_url = token_url
        self._secret = secret
        self._assertion = assertion
        self._scope = scope
        self._session = session
        self._timeout = timeout
        self._token: str | None = None
        self._expires_at = 0.0

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if self._token is None or time.monotonic() > self._expires_at - 60:
            self._refresh()
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def invalidate(self) -> None:
        """Forget the token (the server answered 401 to it): the next request fetches a new one."""
        self._token = None

    def _refresh(self) -> None:
        form = {"grant_type": "client_credentials", "scope": self._scope}
        if self._assertion is not None:
            form.update(client_assertion_type=JWT_BEARER, client_assertion=self._assertion())
        try:
            resp = self._session.post(
                self._token_url,
                data=form,
                auth=HTTPBasicAuth(*self._secret) if self._secret is not None else _NO_AUTH,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise FhirUnavailable(f"token endpoint not reachable: {type(exc).__name__}") from exc
        if resp.status_code in RETRYABLE_STATUS:
            raise FhirUnavailable(
                f"token endpoint answered {resp.status_code}", resp.status_code, None, _retry_after(resp)
            )
        if resp.status_code != 200:
            raise FhirTokenRefused(
                f"token endpoint answered {resp.status_code} {_oauth_error(resp)}".rstrip(), resp.status_code
            )
        try:
            body = resp.json()
            token = body["access_token"]
            expires_in = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise FhirTokenRefused("token endpoint answered 200 without an access_token", 200) from None
        self._token = token
        self._expires_at = time.monotonic() + expires_in


def _oauth_error(resp: requests.Response) -> str:
    """The RFC 6749 ``error`` code of a token endpoint's refusal (a code, never a secret), or ''."""
    try:
        error = resp.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return error if isinstance(error, str) and error.isascii() and len(error) <= 64 else ""


def signing_key(path: Path, algorithm: str) -> Any:
    """The client-assertion key, checked once at start-up against the algorithm it must sign with."""
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
        raise SettingsError(f"{PREFIX}FHIR_PRIVATE_KEY_FILE is not an unencrypted PEM private key") from None
    fits = (
        isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048
        if algorithm == "RS384"
        else isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    )
    if not fits:
        raise SettingsError(
            f"{PREFIX}FHIR_PRIVATE_KEY_FILE does not fit {PREFIX}FHIR_JWT_ALG={algorithm} "
            "(RS384: RSA of 2048 bits or more; ES384: EC P-384)"
        )
    return key


def auth_from_settings(settings: Settings, session: requests.Session) -> AuthBase | None:
    mode = settings.fhir_auth_mode
    if mode == "bearer":
        return BearerAuth(settings.fhir_token)
    if mode == "basic":
        return HTTPBasicAuth(settings.fhir_username, settings.fhir_password)
    if mode == "oauth2":
        return ClientCredentialsAuth(
            settings.fhir_token_url,
            settings.fhir_scope,
            session,
            settings.fhir_timeout_s,
            secret=(settings.fhir_client_id, settings.fhir_client_secret),
        )
    if mode == "smart-backend":
        key = signing_key(Path(settings.fhir_private_key_file), settings.fhir_jwt_alg)
        sign = client_assertion(
            settings.fhir_client_id, settings.fhir_token_url, key, settings.fhir_jwt_alg, settings.fhir_key_id
        )
        return ClientCredentialsAuth(
            settings.fhir_token_url, settings.fhir_scope, session, settings.fhir_timeout_s, assertion=sign
        )
    return None


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _outcome(resp: requests.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome" else None


def raise_for_status(resp: requests.Response) -> None:
    if resp.status_code < 400:
        return
    outcome = _outcome(resp)
    message = f"{resp.request.method} {resp.url} -> {resp.status_code}"
    if resp.status_code in RETRYABLE_STATUS:
        raise FhirUnavailable(message, resp.status_code, outcome, _retry_after(resp))
    if resp.status_code in (404, 410):
        raise FhirNotFound(message, resp.status_code, outcome)
    if resp.status_code in (409, 412):
        raise FhirConflict(message, resp.status_code, outcome)
    raise FhirRejected(message, resp.status_code, outcome)


def normalized_base_url(url: str) -> str:
    """The form of a server's base URL that sync records name it by (``outbox``, ``synced_resources``)."""
    return url.rstrip("/")


class FhirClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        verify: bool | str = True,
        auth: AuthBase | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        backoff_base: float = 0.5,
    ) -> None:
        self.base_url = normalized_base_url(base_url)
        self._session = session or requests.Session()
        self._session.verify = verify
        self._session.auth = auth
        self._session.headers.update({"Accept": FHIR_JSON, "User-Agent": "ivclms"})
        self._timeout = timeout
        self._retries = retries
        self._sleep = sleep
        self._backoff_base = backoff_base

    @classmethod
    def from_settings(cls, settings: Settings) -> FhirClient:
        session = requests.Session()
        verify: bool | str = settings.fhir_ca_bundle or settings.fhir_verify_tls
        return cls(
            settings.fhir_url,
            timeout=settings.fhir_timeout_s,
            retries=settings.fhir_retries,
            verify=verify,
            auth=auth_from_settings(settings, session),
            session=session,
        )

    def close(self) -> None:
        self._session.close()

    # -- the one request function -------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> requests.Response:
        """Send one request; retry with exponential backoff and jitter only when it is idempotent."""
        if idempotent is None:
            idempotent = method.upper() in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        if path.startswith(("http://", "https://")):
            url = path
        else:
            url = f"{self.base_url}/{path.lstrip('/')}" if path else self.base_url
        send_headers = dict(headers or {})
        if json is not None:
            send_headers.setdefault("Content-Type", FHIR_JSON)
        attempts = 1 + ((self._retries if retries is None else retries) if idempotent else 0)
        last: FhirUnavailable | None = None
        for attempt in range(attempts):
            if last is not None:  # a retry: exponential backoff with jitter, never before Retry-After
                backoff = self._backoff_base * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
                self._sleep(max(backoff, last.retry_after or 0.0))
            try:
                resp = self._send(method, url, json, params, send_headers, timeout or self._timeout)
                raise_for_status(resp)
                return resp
            except requests.RequestException as exc:
                last = FhirUnavailable(f"{method} {url}: {type(exc).__name__}")
                last.__cause__ = exc  # what failed, for a caller that may not show the URL (readiness)
            except FhirUnavailable as exc:
                last = exc
        assert last is not None
        raise last

    def _send(
        self,
        method: str,
        url: str,
        json: Any,
        params: Mapping[str, Any] | None,
        headers: dict[str, str],
        timeout: float,
    ) -> requests.Response:
        """One request; a 401 to a token of our own (client credentials) renews the token once and sends
        the request again. RFC 6750 section 3.1: ``invalid_token`` means "The access token provided is
        expired, revoked, malformed, or invalid for other reasons"; the server did not act on the
        request, so sending it again is safe whatever its method. A second 401 is the answer."""
        resp = self._session.request(method, url, json=json, params=params, headers=headers, timeout=timeout)
        auth = self._session.auth
        if resp.status_code == 401 and isinstance(auth, ClientCredentialsAuth):
            resp.close()
            auth.invalidate()
            resp = self._session.request(
                method, url, json=json, params=params, headers=headers, timeout=timeout
            )
        return resp

    # -- FHIR interactions ----------------------------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        return self._json(self.request("GET", "metadata"))

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        return self._json(self.request("GET", f"{resource_type}/{resource_id}"))

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        headers = {"Prefer": "return=representation"}
        return self._json(self.request("POST", resource["resourceType"], json=resource, headers=headers))

    def update(self, resource: dict[str, Any]) -> dict[str, Any]:
        path = f"{resource['resourceType']}/{resource['id']}"
        headers = {"Prefer": "return=representation"}
        return self._json(self.request("PUT", path, json=resource, headers=headers))

    def search(self, resource_type: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._json(self.request("GET", resource_type, params=params))

    def transaction(self, bundle: dict[str, Any], *, idempotent: bool = False) -> dict[str, Any]:
        """POST a transaction; pass ``idempotent=True`` only for bundles made of conditional updates."""
        return self._json(self.request("POST", "", json=bundle, idempotent=idempotent))

    def validate(self, resource: dict[str, Any], profile: str | None = None) -> dict[str, Any]:
        """``$validate``; an invalid resource is an answer (the OperationOutcome), not an exception."""
        params = {"profile": profile} if profile else None
        try:
            resp = self.request(
                "POST", f"{resource['resourceType']}/$validate", json=resource, params=params, idempotent=True
            )
        except FhirRejected as exc:
            if exc.outcome is not None and exc.status in (400, 412, 422):
                return exc.outcome
            raise
        return self._json(resp)

    @staticmethod
    def _json(resp: requests.Response) -> dict[str, Any]:
        body = resp.json()
        if not isinstance(body, dict):
            raise FhirError(f"{resp.url}: expected a JSON object")
        return body
