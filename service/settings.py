"""Settings: the only module that reads the environment.

Every setting is an ``IVCLMS_<AREA>_<NAME>`` variable with a documented default; the table in the
README is checked against ``SETTINGS_DOC`` by a test so the two cannot drift apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from service.logs import LOG_FORMATS

PREFIX = "IVCLMS_"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
FHIR_AUTH_MODES = ("none", "bearer", "basic", "oauth2", "smart-backend")
FHIR_JWT_ALGS = ("RS384", "ES384")
"""The signing algorithms SMART Backend Services requires servers to support."""


MIN_KEY_BYTES = 32
"""Shortest HS256 secret and pseudonym key accepted: RFC 7518 section 3.2 requires an HS256 key of at
least the hash's size (256 bits); the same for the HMAC-SHA256 pseudonym key."""
LIMIT_SETTINGS = (
    "limits_max_resources_per_case",
    "limits_max_cases_per_import",
    "limits_max_active_exports",
    "limits_max_export_bytes",
)


DEFAULT_DATA_DIR = Path("~/.local/share/ivclms")
"""One absolute place per user (the XDG data directory's usual path), so a command run from another
folder finds the same database as ``ivclms serve``; ``~`` is the home of the user running it."""


class SettingsError(ValueError):
    """A configuration value is missing or malformed; raised at start-up, never later."""


def _env(name: str, doc: str, default: Any) -> Any:
    return field(default=default, metadata={"env": PREFIX + name, "doc": doc})


@dataclass(frozen=True)
class Settings:
    data_dir: Path = _env(
        "DATA_DIR",
        "Directory for the embedded SQLite database and $export files, the same for `ivclms serve` and "
        "every other command. A relative path is resolved once, against the working directory when the "
        "settings are read; `ivclms config` prints the absolute result.",
        DEFAULT_DATA_DIR,
    )
    db_url: str = _env(
        "DB_URL",
        "SQLAlchemy database URL. Empty: SQLite file `<DATA_DIR>/ivclms.sqlite3` (WAL). "
        "Production: `postgresql+psycopg://user:pass@host/db`.",
        "",
    )
    db_migrate: bool = _env(
        "DB_MIGRATE", "Bring the database schema up to date (Alembic) when the service starts.", True
    )
    http_host: str = _env("HTTP_HOST", "Address `ivclms serve` binds to.", "127.0.0.1")
    http_port: int = _env("HTTP_PORT", "Port `ivclms serve` listens on.", 8080)
    http_workers: int = _env(
        "HTTP_WORKERS",
        "gunicorn worker processes. With more than one, `/metrics` sums every worker's figures "
        "(prometheus_client's multiprocess mode, files in `<DATA_DIR>/metrics` or PROMETHEUS_MULTIPROC_DIR, "
        "emptied at start).",
        2,
    )
    http_threads: int = _env("HTTP_THREADS", "Threads per gunicorn worker.", 4)
    http_max_body_bytes: int = _env(
        "HTTP_MAX_BODY_BYTES", "Largest request body accepted; larger gets 413.", 10 * 1024 * 1024
    )
    http_public_base_url: str = _env(
        "HTTP_PUBLIC_BASE_URL",
        "Public base URL of the service (`https://ivclms.example.org`): every absolute link it writes "
        "(Content-Location, fullUrl, Location, next links, $export manifests) starts with it. Empty: the "
        "request's Host, accepted only when it is one of HTTP_TRUSTED_HOSTS (else 400).",
        "",
    )
    http_trusted_hosts: str = _env(
        "HTTP_TRUSTED_HOSTS",
        "Comma-separated Host names (port ignored; `.example.org` matches subdomains; IPv6 literals "
        "cannot be matched) accepted when HTTP_PUBLIC_BASE_URL is empty; other hosts get 400.",
        "localhost,127.0.0.1",
    )
    http_cors_origins: str = _env(
        "HTTP_CORS_ORIGINS",
        "Comma-separated origins (`https://app.example.org`) of browser apps (SMART) allowed by CORS; each "
        "listed origin is echoed in Access-Control-Allow-Origin (never `*`, never with credentials). "
        "Empty: no CORS headers.",
        "",
    )
    auth_disabled: bool = _env(
        "AUTH_DISABLED", "Turn bearer-token authentication off (a warning is logged at start-up).", False
    )
    auth_jwt_secret: str = _env(
        "AUTH_JWT_SECRET", f"Shared secret for HS256 access tokens (at least {MIN_KEY_BYTES} bytes).", ""
    )
    auth_jwt_public_key_file: str = _env(
        "AUTH_JWT_PUBLIC_KEY_FILE", "PEM public key for RS256/ES256 access tokens.", ""
    )
    auth_audience: str = _env(
        "AUTH_AUDIENCE", "Required `aud` claim of access tokens (empty: not checked).", ""
    )
    auth_issuer: str = _env("AUTH_ISSUER", "Required `iss` claim of access tokens (empty: not checked).", "")
    auth_client_sources: str = _env(
        "AUTH_CLIENT_SOURCES",
        "Source systems each OAuth client may write, as JSON: "
        '`{"client-id": ["urn:hospital-a"]}` (added to the token\'s `ivclms_sources` claim).',
        "",
    )
    fhir_url: str = _env("FHIR_URL", "Base URL of the hospital's FHIR R4 server. Empty: sync is off.", "")
    fhir_auth_mode: str = _env(
        "FHIR_AUTH_MODE", "Authentication to the FHIR server: " + "|".join(FHIR_AUTH_MODES) + ".", "none"
    )
    fhir_token: str = _env("FHIR_TOKEN", "Bearer token for `FHIR_AUTH_MODE=bearer`.", "")
    fhir_username: str = _env("FHIR_USERNAME", "User for `FHIR_AUTH_MODE=basic`.", "")
    fhir_password: str = _env("FHIR_PASSWORD", "Password for `FHIR_AUTH_MODE=basic`.", "")
    fhir_token_url: str = _env(
        "FHIR_TOKEN_URL", "OAuth2 token endpoint for `FHIR_AUTH_MODE=oauth2` or `smart-backend`.", ""
    )
    fhir_client_id: str = _env(
        "FHIR_CLIENT_ID", "OAuth2 client id for `FHIR_AUTH_MODE=oauth2` or `smart-backend`.", ""
    )
    fhir_client_secret: str = _env(
        "FHIR_CLIENT_SECRET", "OAuth2 client secret for `FHIR_AUTH_MODE=oauth2`.", ""
    )
    fhir_scope: str = _env(
        "FHIR_SCOPE",
        "OAuth2 scope requested for `FHIR_AUTH_MODE=oauth2` or `smart-backend`.",
        "system/*.cruds",
    )
    fhir_private_key_file: str = _env(
        "FHIR_PRIVATE_KEY_FILE",
        "PEM private key (RSA, or EC P-384) signing the client assertion, `FHIR_AUTH_MODE=smart-backend`.",
        "",
    )
    fhir_key_id: str = _env(
        "FHIR_KEY_ID", "`kid` of that key in the JWK Set registered with the server (`smart-backend`).", ""
    )
    fhir_jwt_alg: str = _env(
        "FHIR_JWT_ALG",
        "Client assertion signature for `smart-backend`: " + "|".join(FHIR_JWT_ALGS) + ".",
        "RS384",
    )
    fhir_timeout_s: float = _env(
        "FHIR_TIMEOUT_S", "Connect and read timeout for FHIR server calls, seconds.", 30.0
    )
    fhir_retries: int = _env(
        "FHIR_RETRIES", "Retries of idempotent FHIR calls on network errors, 429 and 5xx.", 3
    )
    fhir_verify_tls: bool = _env("FHIR_VERIFY_TLS", "Verify the FHIR server's TLS certificate.", True)
    fhir_ca_bundle: str = _env(
        "FHIR_CA_BUNDLE", "CA bundle file for the FHIR server (empty: system CAs).", ""
    )
    sync_batch_size: int = _env("SYNC_BATCH_SIZE", "Outbox entries a worker claims per round.", 10)
    sync_lease_s: float = _env(
        "SYNC_LEASE_S",
        "Seconds a claim is held before another worker may take it; must exceed "
        "FHIR_TIMEOUT_S x (FHIR_RETRIES + 1) plus backoff.",
        300.0,
    )
    sync_poll_s: float = _env("SYNC_POLL_S", "Seconds an idle worker waits before looking again.", 2.0)
    sync_max_backoff_s: float = _env(
        "SYNC_MAX_BACKOFF_S",
        "Cap of the retry backoff after a failed delivery (the server's Retry-After is always honoured).",
        300.0,
    )
    pull_interval_s: float = _env(
        "PULL_INTERVAL_S", "Seconds between pulls from the FHIR server in `ivclms worker` (0: off).", 0.0
    )
    source_system: str = _env(
        "SOURCE_SYSTEM", "Default source-system URI for cases that do not name one.", "urn:ivclms:local"
    )
    export_ttl_s: int = _env("EXPORT_TTL_S", "Seconds a finished $export's files are kept.", 86400)
    export_in_process: bool = _env(
        "EXPORT_IN_PROCESS",
        "Run $export jobs in a background thread of the web process (embedded use); "
        "false when `ivclms worker` processes run them.",
        True,
    )
    validate_intake: bool = _env(
        "VALIDATE_INTAKE",
        "Validate posted and mapped Bundles against the profiles before storing (422 naming the element).",
        True,
    )
    validation_definitions_dir: str = _env(
        "VALIDATION_DEFINITIONS_DIR",
        "Base FHIR R4 definitions for the local validator (placed by scripts/r4-definitions). "
        "Empty: data/fhir-r4 in the installation.",
        "",
    )
    registry_pseudonym_key: str = _env(
        "REGISTRY_PSEUDONYM_KEY",
        f"HMAC key of the pseudonyms in de-identified registry extracts (at least {MIN_KEY_BYTES} bytes; "
        "empty: those answer 501).",
        "",
    )
    limits_max_resources_per_case: int = _env(
        "LIMITS_MAX_RESOURCES_PER_CASE",
        "Most FHIR resources one case may map to, and most entries one patient may have in a posted "
        "Bundle; checked before validation (items of the case's arrays) and after mapping (413).",
        1000,
    )
    limits_max_cases_per_import: int = _env(
        "LIMITS_MAX_CASES_PER_IMPORT",
        "Most cases in one CSV import (data rows) or one posted Bundle (patients), counted before "
        "validation (413).",
        1000,
    )
    limits_max_active_exports: int = _env(
        "LIMITS_MAX_ACTIVE_EXPORTS",
        "Most $export jobs one client may have queued or running at once (more: 429 with Retry-After).",
        2,
    )
    limits_max_export_bytes: int = _env(
        "LIMITS_MAX_EXPORT_BYTES",
        "Most bytes of $export files kept for one client until they expire or are deleted (more: 429 "
        "at kick-off; a job that would pass it fails).",
        1024**3,
    )
    log_level: str = _env("LOG_LEVEL", "Log level: DEBUG, INFO, WARNING, ERROR.", "INFO")
    log_format: str = _env(
        "LOG_FORMAT",
        "`text` (one escaped line per record) or `json` (one JSON object per line: time, level, logger, "
        "message, exception), for the service's and gunicorn's logs alike.",
        "text",
    )
    session_secret: str = _env(
        "SESSION_SECRET",
        "Key signing the console's session cookie (sign-in and CSRF tokens), at least 32 bytes. Empty: a "
        "random key kept in `<DATA_DIR>/session.key` (mode 0600), shared by every worker on this host; set "
        "it when several hosts serve one console.",
        "",
    )
    session_cookie_secure: bool = _env(
        "SESSION_COOKIE_SECURE",
        "Send the console's session cookie over HTTPS only. Browsers treat http://127.0.0.1 and "
        "http://localhost as secure, so local trial mode works with it on.",
        True,
    )

    oidc_issuer: str = _env(
        "OIDC_ISSUER",
        "OpenID Connect issuer of the hospital's identity provider for console sign-in (its endpoints are "
        "discovered from `<issuer>/.well-known/openid-configuration`); https unless on loopback. Empty: "
        "no sign-in, the console takes the API's bearer token only. Ignored when AUTH_DISABLED.",
        "",
    )
    oidc_client_id: str = _env("OIDC_CLIENT_ID", "The console's client id at the identity provider.", "")
    oidc_client_secret: str = _env(
        "OIDC_CLIENT_SECRET",
        "The console's client secret (client_secret_basic). Empty: a public client (PKCE S256 is always "
        "used).",
        "",
    )
    oidc_scopes: str = _env("OIDC_SCOPES", "Scopes asked for at sign-in (space-separated).", "openid profile")
    oidc_scope_claim: str = _env(
        "OIDC_SCOPE_CLAIM",
        "ID-token claim that carries the user's API scopes (a space-separated string or a list), read like "
        "an access token's `scope`; `ivclms_sources` and `ivclms_roles` are read as for access tokens.",
        "scope",
    )
    oidc_session_max_age_s: int = _env(
        "OIDC_SESSION_MAX_AGE_S",
        "Seconds a console sign-in lasts (from the sign-in, not bound to the ID token's own expiry).",
        8 * 3600,
    )

    def __post_init__(self) -> None:
        # Resolved here, once: a relative IVCLMS_DATA_DIR must not mean another folder per command.
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().absolute())

    @property
    def database_url(self) -> str:
        """The effective database URL: the embedded SQLite file unless one is configured."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'ivclms.sqlite3').resolve()}"

    @property
    def client_sources(self) -> dict[str, frozenset[str]]:
        """``IVCLMS_AUTH_CLIENT_SOURCES`` parsed (checked by ``validated``)."""
        if not self.auth_client_sources.strip():
            return {}
        raw = json.loads(self.auth_client_sources)
        return {str(k): frozenset(v) for k, v in raw.items()}

    @property
    def sync_enabled(self) -> bool:
        return bool(self.fhir_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, serving: bool = True) -> Settings:
        """Read every setting once; unknown ``IVCLMS_`` variables are an error (a typo is not a default).

        ``serving=False`` for commands that answer no HTTP request (``ivclms config``, ``export``, ...):
        they need no access-token settings, which are then not checked."""
        env = os.environ if environ is None else environ
        known = {f.metadata["env"]: f for f in fields(cls)}
        unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known and not _ignored(k))
        if unknown:
            raise SettingsError(f"unknown setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, f in known.items():
            if name in env:
                values[f.name] = _parse(name, env[name], f.default)
        return cls(**values).validated(serving=serving)

    def replace(self, *, serving: bool = True, **changes: Any) -> Settings:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(changes)
        return Settings(**data).validated(serving=serving)

    def _check_smart_backend(self) -> None:
        needed = ("fhir_token_url", "fhir_client_id", "fhir_private_key_file", "fhir_key_id")
        missing = [f"{PREFIX}{name.upper()}" for name in needed if not getattr(self, name)]
        if missing:
            raise SettingsError(f"{', '.join(missing)} required for {PREFIX}FHIR_AUTH_MODE=smart-backend")
        if self.fhir_jwt_alg not in FHIR_JWT_ALGS:
            raise SettingsError(f"{PREFIX}FHIR_JWT_ALG must be one of {', '.join(FHIR_JWT_ALGS)}")
        if not os.path.isfile(self.fhir_private_key_file):
            raise SettingsError(f"{PREFIX}FHIR_PRIVATE_KEY_FILE is not a readable file")

    def _check_client_sources(self) -> None:
        if not self.auth_client_sources.strip():
            return
        name = f"{PREFIX}AUTH_CLIENT_SOURCES"
        try:
            raw = json.loads(self.auth_client_sources)
        except ValueError as exc:
            raise SettingsError(f"{name} is not JSON: {exc}") from None
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and k and isinstance(v, list) and all(isinstance(x, str) and x for x in v)
            for k, v in raw.items()
        ):
            raise SettingsError(f'{name} must map client ids to lists of source systems: {{"c": ["urn:a"]}}')

    def validated(self, *, serving: bool = True) -> Settings:
        """The settings, checked; access-token settings only when ``serving`` (HTTP is answered)."""
        if self.fhir_auth_mode not in FHIR_AUTH_MODES:
            raise SettingsError(f"{PREFIX}FHIR_AUTH_MODE must be one of {', '.join(FHIR_AUTH_MODES)}")
        if self.fhir_auth_mode == "bearer" and not self.fhir_token:
            raise SettingsError(f"{PREFIX}FHIR_TOKEN is required when {PREFIX}FHIR_AUTH_MODE=bearer")
        if self.fhir_auth_mode == "basic" and not (self.fhir_username and self.fhir_password):
            raise SettingsError(
                f"{PREFIX}FHIR_USERNAME and {PREFIX}FHIR_PASSWORD are required for basic auth"
            )
        if self.fhir_auth_mode == "oauth2" and not (
            self.fhir_token_url and self.fhir_client_id and self.fhir_client_secret
        ):
            raise SettingsError(
                f"{PREFIX}FHIR_TOKEN_URL, {PREFIX}FHIR_CLIENT_ID and {PREFIX}FHIR_CLIENT_SECRET are required "
                "for oauth2"
            )
        if self.fhir_auth_mode == "smart-backend":
            self._check_smart_backend()
        if self.session_secret and len(self.session_secret.encode("utf-8")) < MIN_KEY_BYTES:
            raise SettingsError(f"{PREFIX}SESSION_SECRET must be at least {MIN_KEY_BYTES} bytes")
        if serving and not self.auth_disabled and not (self.auth_jwt_secret or self.auth_jwt_public_key_file):
            raise SettingsError(
                f"authentication is on by default: set {PREFIX}AUTH_JWT_SECRET or "
                f"{PREFIX}AUTH_JWT_PUBLIC_KEY_FILE, or {PREFIX}AUTH_DISABLED=true for a local trial"
            )
        self._check_client_sources()
        self._check_oidc()
        if self.http_max_body_bytes <= 0:
            raise SettingsError(f"{PREFIX}HTTP_MAX_BODY_BYTES must be positive")
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"{PREFIX}LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
        self._check_keys()
        self._check_http()
        self._check_cors()
        for name in LIMIT_SETTINGS:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{PREFIX}{name.upper()} must be positive")
        return self

    @property
    def oidc_enabled(self) -> bool:
        """Console sign-in is on: an issuer is configured and authentication is not disabled."""
        return bool(self.oidc_issuer) and not self.auth_disabled

    def _check_oidc(self) -> None:
        if not self.oidc_issuer:
            return
        parts = urlsplit(self.oidc_issuer)
        loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise SettingsError(f"{PREFIX}OIDC_ISSUER must be an https URL (http only on loopback)")
        if not parts.netloc or parts.query or parts.fragment:
            raise SettingsError(f"{PREFIX}OIDC_ISSUER must be a URL like https://idp.example.org/realm")
        if not self.oidc_client_id:
            raise SettingsError(f"{PREFIX}OIDC_CLIENT_ID is required with {PREFIX}OIDC_ISSUER")
        if "openid" not in self.oidc_scopes.split():
            raise SettingsError(f"{PREFIX}OIDC_SCOPES must include openid")
        if not self.oidc_scope_claim:
            raise SettingsError(f"{PREFIX}OIDC_SCOPE_CLAIM must name a claim")
        if self.oidc_session_max_age_s <= 0:
            raise SettingsError(f"{PREFIX}OIDC_SESSION_MAX_AGE_S must be positive")

    def _check_keys(self) -> None:
        for name in ("auth_jwt_secret", "registry_pseudonym_key"):
            value: str = getattr(self, name)
            if value and len(value.encode()) < MIN_KEY_BYTES:
                raise SettingsError(
                    f"{PREFIX}{name.upper()} is {len(value.encode())} bytes; at least {MIN_KEY_BYTES} "
                    "random bytes are required (e.g. `openssl rand -base64 48`)"
                )

    def _check_http(self) -> None:
        base = self.http_public_base_url
        if base:
            parts = urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
                raise SettingsError(
                    f"{PREFIX}HTTP_PUBLIC_BASE_URL must be an http(s) URL like https://ivclms.example.org"
                )
        elif not self.trusted_hosts:
            raise SettingsError(
                f"{PREFIX}HTTP_TRUSTED_HOSTS must name at least one host when {PREFIX}HTTP_PUBLIC_BASE_URL "
                "is empty"
            )

    @property
    def cors_origins(self) -> frozenset[str]:
        """``IVCLMS_HTTP_CORS_ORIGINS`` as a set of origins (scheme://host[:port])."""
        return frozenset(o.strip().rstrip("/") for o in self.http_cors_origins.split(",") if o.strip())

    def _check_cors(self) -> None:
        for origin in self.cors_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise SettingsError(
                    f"{PREFIX}HTTP_CORS_ORIGINS: {origin!r} is not an origin like https://app.example.org "
                    "(`*` is not accepted: list each origin)"
                )

    @property
    def trusted_hosts(self) -> list[str]:
        """``IVCLMS_HTTP_TRUSTED_HOSTS`` as a list (Flask's TRUSTED_HOSTS)."""
        return [h.strip() for h in self.http_trusted_hosts.split(",") if h.strip()]


# Variables that belong to the test harness scripts, not to the service.
_HARNESS = ("IVCLMS_HAPI_", "IVCLMS_PG_", "IVCLMS_OAUTH_", "IVCLMS_TEST_")


def _ignored(name: str) -> bool:
    return name.startswith(_HARNESS)


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            value = raw.strip().lower()
            if value in _TRUE:
                return True
            if value in _FALSE:
                return False
            raise ValueError("expected true or false")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        return raw
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: {exc}") from exc


SETTINGS_DOC: list[tuple[str, str, str]] = [
    (f.metadata["env"], str(f.default), f.metadata["doc"]) for f in fields(Settings)
]
