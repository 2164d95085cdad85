"""The console's session cookie and the CSRF token of every form (issue 16).

The session is Flask's signed cookie: HttpOnly, SameSite=Strict, Secure by default. Its key is
``IVCLMS_SESSION_SECRET`` or, unset, a random key kept in ``<DATA_DIR>/session.key`` so that every worker
on the host signs alike and a restart keeps people signed in. Each session holds one random CSRF token;
every console form posts it back as ``csrf_token`` and ``check`` compares it in constant time. A
request without the session's token is refused with 403 before anything is read or written.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from flask import Flask, request, session

from service.errors import Forbidden
from service.settings import Settings

FIELD = "csrf_token"
_KEY = "csrf"
KEY_FILE = "session.key"


def _file_key(data_dir: Path) -> bytes:
    """The host's session key, created once (exclusive create: two workers starting together agree)."""
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
        path.unlink()  # a torn write of a crashed first start: make a new one
        return _file_key(data_dir)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(48))
    return path.read_bytes()


def init_app(app: Flask, settings: Settings) -> None:
    app.secret_key = settings.session_secret.encode("utf-8") or _file_key(settings.data_dir)
    app.config.update(
        SESSION_COOKIE_NAME="ivclms_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
    )
    app.jinja_env.globals["csrf_token"] = token


def token() -> str:
    """The session's CSRF token (made on first use); templates call it as ``csrf_token()``."""
    value = session.get(_KEY)
    if not isinstance(value, str):
        value = secrets.token_urlsafe(32)
        session[_KEY] = value
    return value


def check() -> None:
    """403 unless the form posted the session's token: a cross-site form cannot know it."""
    expected = session.get(_KEY)
    sent = request.form.get(FIELD, "")
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), sent.encode()):
        raise Forbidden("the form's CSRF token is missing or stale: reload the page and submit again")
