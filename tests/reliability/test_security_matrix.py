"""Every route of the app x {no token, expired, wrong signature, wrong scope, right scope}, the safe
defaults of ``Settings``, and no exception text in an internal error's answer or log line."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Blueprint, Flask
from werkzeug.routing import Rule

from service import create_app
from service.api.security import PUBLIC_ENDPOINTS
from service.settings import Settings, SettingsError
from tests.reliability.conftest import INPUTS, build, check_answer
from tests.tokens import token

OTHER_SECRET = "another-secret-that-is-long-enough-for-hs256-0123456789"
ID = "00000000-0000-4000-8000-000000000000"
PATH_VALUES = {
    "ref": ID,
    "resource_type": "Patient",
    "resource_id": ID,
    "version": "1",
    "patient_id": ID,
    "job_id": ID,
    "name": "Patient.ndjson",
    "entry_id": "1",
    "conflict_id": "1",
    "group_id": ID,
    "filename": "console.css",
    "curve": "overall_survival",
}
TOKENS = {
    "none": None,
    "expired": token(exp_offset=-60),
    "wrong signature": token(secret=OTHER_SECRET),
    "garbage": "not.a.jwt",
}
FORM_PAGES = {"console_form.new_case": "POST"}
"""GET pages that show no data, only a form for a write: gated by that write's scope (an empty new-case
form needs ``c``, not a read)."""
CSRF = "matrix-csrf-token"
"""The console forms check the session's CSRF token first (403): the matrix posts it, so that what it
probes is the scope check behind it (tests/unit/api/test_csrf.py and the forms' tests cover CSRF)."""
OTHER_TYPE = "system/Questionnaire.cruds"
"""A system scope with every action on a type that guards nothing here."""
READ_OPERATIONS = {
    "validate.validate_any",
    "validate.validate_type",
    "fhir_read.search_post",
    "bulk.export_system",
    "bulk.export_patients",
    "bulk.export_group",
}
"""POSTs that store nothing: $validate needs a read scope on the posted type, POST _search (issue 13)
the search scopes of GET search, a POST $export kick-off (a Parameters body, Bulk Data v2) reads like
its GET."""
WRITE_BUNDLE = (
    '{"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "DELETE", "url": '
    f'"Patient/{ID}"}}}}]}}'
)
"""What ``POST /fhir`` is probed with: a write entry, so read scopes are refused (a batch of GET entries
only needs the read scopes of its types: tests/unit/api/test_fhir_intake_answers.py)."""
OWNED = {"bulk.export_status", "bulk.export_cancel", "bulk.export_file"}
"""Guarded by the job's owner: another client's (or no) job is 404 whatever the scope."""


def _routes() -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(Settings(data_dir=Path(folder), auth_jwt_secret="x" * 40, db_migrate=False))
        app.extensions["ivclms"].engine.dispose()
    routes = []
    for rule in app.url_map.iter_rules():
        assert isinstance(rule, Rule)
        if rule.endpoint == "static":
            continue
        path = rule.rule
        for name in rule.arguments:
            for form in (f"<int:{name}>", f"<path:{name}>", f"<{name}>"):
                path = path.replace(form, PATH_VALUES[name])
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((rule.endpoint, method, path))
    return sorted(routes)


ROUTES = _routes()
PROTECTED = [r for r in ROUTES if r[0] not in PUBLIC_ENDPOINTS]
PUBLIC = [r for r in ROUTES if r[0] in PUBLIC_ENDPOINTS]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    app = build(tmp_path_factory.mktemp("matrix"), db_url="")
    yield app.test_client()
    app.extensions["ivclms"].engine.dispose()


def _call(client, method: str, path: str, tok: str | None):
    headers = {"Prefer": "respond-async"}  # $export checks Prefer before the scope
    if tok is not None:
        headers["Authorization"] = f"Bearer {tok}"
    body = None
    if path.endswith("$validate"):  # its scope is a read on the posted type, so it needs a resource
        body, headers["Content-Type"] = '{"resourceType": "Patient"}', "application/fhir+json"
    if path.rstrip("/") == "/fhir" and method == "POST":  # a batch of reads needs read scopes: a write
        body, headers["Content-Type"] = WRITE_BUNDLE, "application/fhir+json"
    form = None
    if path.startswith("/ui/") and method == "POST":  # a console form: the session's CSRF token posted
        with client.session_transaction() as session:
            session["csrf"] = CSRF
        form = {"csrf_token": CSRF}
    resp = client.open(path, method=method, headers=headers, data=body if form is None else form)
    INPUTS[f"security matrix ({method} {path.split('/')[1]})"] += 1
    check_answer(resp, f"{method} {path}")
    return resp


def test_every_route_is_in_the_matrix() -> None:
    assert len(PROTECTED) >= 25 and {e for e, _, _ in PUBLIC} == PUBLIC_ENDPOINTS - {"static"}


@pytest.mark.parametrize("kind", sorted(TOKENS))
@pytest.mark.parametrize(("endpoint", "method", "path"), PROTECTED)
def test_without_a_valid_token_is_401(client, kind: str, endpoint: str, method: str, path: str) -> None:
    resp = _call(client, method, path, TOKENS[kind])
    assert resp.status_code == 401, (endpoint, kind, resp.get_json())
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def _wrong_action(method: str) -> str:
    return "system/*.cud" if method == "GET" else "system/*.rs"


@pytest.mark.parametrize(("endpoint", "method", "path"), PROTECTED)
def test_wrong_scope_is_403(client, endpoint: str, method: str, path: str, request) -> None:
    served = "GET" if endpoint in READ_OPERATIONS else FORM_PAGES.get(endpoint, method)
    wrong_action = _wrong_action(served)
    for scope in (OTHER_TYPE, wrong_action):
        resp = _call(client, method, path, token(scope))
        if endpoint in OWNED:
            assert resp.status_code == 404, (endpoint, scope)
        else:
            assert resp.status_code == 403, (endpoint, scope, resp.get_json())


@pytest.mark.parametrize(("endpoint", "method", "path"), PROTECTED)
def test_right_scope_is_let_in(client, endpoint: str, method: str, path: str) -> None:
    resp = _call(client, method, path, token("system/*.cruds"))
    assert resp.status_code not in (401, 403), (endpoint, resp.get_json())


@pytest.mark.parametrize("kind", [*sorted(TOKENS), "other type", "right scope"])
@pytest.mark.parametrize(("endpoint", "method", "path"), PUBLIC)
def test_public_endpoints_always_answer(client, kind: str, endpoint: str, method: str, path: str) -> None:
    tok = {"other type": token(OTHER_TYPE), "right scope": token()}.get(kind, TOKENS.get(kind))
    resp = _call(client, method, path, tok)
    assert resp.status_code == 200, (endpoint, kind)


# ---- safe defaults --------------------------------------------------------------------------------


def test_settings_defaults_are_safe() -> None:
    defaults = Settings()
    assert defaults.auth_disabled is False
    assert defaults.fhir_verify_tls is True
    assert 0 < defaults.http_max_body_bytes <= 64 * 1024 * 1024
    with pytest.raises(SettingsError, match="AUTH_JWT_SECRET"):
        Settings.from_env({})
    with pytest.raises(SettingsError, match="AUTH_JWT_SECRET"):
        defaults.validated()


def test_the_size_limit_reaches_flask(tmp_path: Path) -> None:
    app = build(tmp_path, http_max_body_bytes=1234)
    assert app.config["MAX_CONTENT_LENGTH"] == 1234
    app.extensions["ivclms"].engine.dispose()


def test_an_app_without_a_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError):
        create_app(Settings(data_dir=tmp_path)).extensions["ivclms"].engine.dispose()


SECRET_TEXT = "patient 123-45-6789 Jane Roe"


@pytest.fixture
def failing_app(tmp_path: Path) -> Iterator[Flask]:
    app = build(tmp_path)
    bp = Blueprint("boom", __name__)

    @bp.get("/boom")
    def boom():
        raise RuntimeError(SECRET_TEXT)

    app.register_blueprint(bp)
    yield app
    app.extensions["ivclms"].engine.dispose()


def test_internal_error_leaks_no_exception_text(failing_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    resp = failing_app.test_client().get("/boom", headers={"Authorization": f"Bearer {token()}"})
    INPUTS["forced internal error"] += 1
    assert resp.status_code == 500
    assert resp.mimetype == "application/fhir+json"
    assert resp.get_json()["issue"][0]["code"] == "exception"
    body = resp.get_data(as_text=True)
    assert SECRET_TEXT not in body and "RuntimeError" not in body and "Traceback" not in body
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors, "the internal error is logged"
    for record in caplog.records:
        assert SECRET_TEXT not in record.getMessage()
        assert record.exc_info is None and not record.exc_text
