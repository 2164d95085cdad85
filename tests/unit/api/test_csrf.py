"""The console session cookie and CSRF token (service.api.csrf): the contract every console form uses."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from flask import Flask, session

from service import create_app
from service.api import csrf
from service.errors import Forbidden
from service.settings import Settings, SettingsError
from tests.support.auth import TEST_SECRET


def _app(tmp_path: Path, **extra: object) -> Flask:
    return create_app(Settings(data_dir=tmp_path, auth_jwt_secret=TEST_SECRET, **extra))  # type: ignore[arg-type]


def test_the_key_file_is_made_once_private_and_shared(tmp_path: Path) -> None:
    first, second = _app(tmp_path), _app(tmp_path)
    key_file = tmp_path / csrf.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.secret_key == second.secret_key == key_file.read_bytes()
    assert len(key_file.read_bytes()) >= 32


def test_a_configured_secret_is_used_and_a_short_one_refused(tmp_path: Path) -> None:
    secret = "s" * 40
    assert _app(tmp_path, session_secret=secret).secret_key == secret.encode()
    assert not (tmp_path / csrf.KEY_FILE).exists()
    with pytest.raises(SettingsError, match="SESSION_SECRET"):
        _app(tmp_path, session_secret="short")


def test_cookie_flags(tmp_path: Path) -> None:
    app = _app(tmp_path)
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Strict"
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_check_accepts_the_sessions_token_only(tmp_path: Path) -> None:
    app = _app(tmp_path)
    with app.test_request_context("/ui", method="POST", data={}):
        value = csrf.token()
        assert csrf.token() == value  # one per session
        with pytest.raises(Forbidden):
            csrf.check()  # not posted
    with app.test_request_context("/ui", method="POST", data={csrf.FIELD: "forged"}):
        csrf.token()
        with pytest.raises(Forbidden):
            csrf.check()
    with app.test_request_context("/ui", method="POST", data={csrf.FIELD: "x"}), pytest.raises(Forbidden):
        csrf.check()  # a session without a token refuses everything


def test_check_passes_with_the_token_the_form_carried(tmp_path: Path) -> None:
    app = _app(tmp_path)
    with app.test_request_context("/ui", method="POST", data={csrf.FIELD: "the-token"}):
        session[csrf._KEY] = "the-token"
        csrf.check()
