"""Console sign-in with OpenID Connect: GET /ui/sign-in, GET /ui/callback, POST /ui/sign-out (issue 16).

Two cookies, because a SameSite=Strict cookie is not sent on the identity provider's cross-site
redirect back to /ui/callback:

- the login transaction (state, nonce, PKCE verifier, where to go next) in ``ivclms_signin``: signed,
  HttpOnly, SameSite=Lax, only for the callback's path, ten minutes, used once;
- the sign-in itself in the console session (``service.api.csrf``: HttpOnly, SameSite=Strict), made anew
  at sign-in (no session fixation). The callback answers a small same-site page that refreshes to the
  target: a redirect chain started cross-site would not carry the Strict cookie to the first page.

The session's principal is accepted on console endpoints only (``service.api.security``), never on the
JSON/FHIR API, where a cookie would open the door to cross-site requests.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any
from urllib.parse import urlencode

from flask import (
    Blueprint,
    Flask,
    Response,
    after_this_request,
    current_app,
    render_template,
    request,
    session,
)
from itsdangerous import BadSignature, URLSafeTimedSerializer

from service.api import csrf, links
from service.api.console import CONSOLE_DIR, HTML_TYPE
from service.auth.oidc import OidcClient, Transaction, principal_from_session, safe_next
from service.auth.principal import Principal
from service.errors import BadRequest, Issue, Unauthorized
from service.settings import Settings

log = logging.getLogger("ivclms.signin")

bp = Blueprint("signin", __name__, template_folder=str(CONSOLE_DIR / "templates"))

TXN_COOKIE = "ivclms_signin"
TXN_MAX_AGE_S = 600
"""A sign-in not finished in ten minutes starts again."""
CALLBACK_PATH = "/ui/callback"
_SESSION_KEY = "oidc"
_TXN_SALT = "ivclms-oidc-transaction"
PUBLIC = frozenset({"signin.sign_in", "signin.callback", "signin.sign_out"})
"""Reached without a principal: they start, finish and end a sign-in."""


def _client() -> OidcClient:
    client: OidcClient = _state()["client"]
    return client


def _state() -> dict[str, Any]:
    state: dict[str, Any] = current_app.extensions["ivclms_signin"]
    return state


def init_app(app: Flask, settings: Settings) -> None:
    """Registers sign-in when it is configured and authentication is on (else: no sign-in at all)."""
    app.jinja_env.globals["signed_in_as"] = signed_in_as
    app.jinja_env.globals["signin_enabled"] = settings.oidc_enabled
    if not settings.oidc_enabled:
        if settings.oidc_issuer:
            log.warning("IVCLMS_OIDC_ISSUER is ignored: authentication is disabled")
        return
    app.extensions["ivclms_signin"] = {"client": OidcClient(settings), "settings": settings}
    app.config["PERMANENT_SESSION_LIFETIME"] = settings.oidc_session_max_age_s
    app.register_blueprint(bp)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key or b"", salt=_TXN_SALT)


def _page(html: str, status: int = 200) -> Response:
    return Response(html, status=status, content_type=HTML_TYPE, headers={"Cache-Control": "no-store"})


def _redirect_uri() -> str:
    return links.absolute(CALLBACK_PATH)


@bp.get("/ui/sign-in")
def sign_in() -> Response:
    url, txn = _client().start(_redirect_uri(), safe_next(request.args.get("next")))
    response = Response(status=302, headers={"Location": url})
    response.headers["Cache-Control"] = "no-store"
    settings: Settings = _state()["settings"]
    response.set_cookie(
        TXN_COOKIE,
        _serializer().dumps([txn.state, txn.nonce, txn.verifier, txn.next]),
        max_age=TXN_MAX_AGE_S,
        path=CALLBACK_PATH,
        secure=settings.session_cookie_secure,
        httponly=True,
        samesite="Lax",
    )
    return response


def _transaction() -> Transaction:
    raw = request.cookies.get(TXN_COOKIE)
    if not raw:
        raise _no_signin("no sign-in is in progress in this browser (or it was finished already)")
    try:
        state, nonce, verifier, next_path = _serializer().loads(raw, max_age=TXN_MAX_AGE_S)
    except (BadSignature, ValueError, TypeError):
        raise _no_signin("the sign-in in progress has expired or is not valid") from None
    return Transaction(state=str(state), nonce=str(nonce), verifier=str(verifier), next=safe_next(next_path))


def _no_signin(message: str) -> BadRequest:
    return BadRequest([Issue("login", f"{message}: start again from the sign-in page", "state")])


@bp.get(CALLBACK_PATH)
def callback() -> Response:
    @after_this_request
    def _forget(response: Response) -> Response:
        # single use, whatever the outcome: a replayed callback finds no transaction
        settings: Settings = _state()["settings"]
        response.delete_cookie(
            TXN_COOKIE,
            path=CALLBACK_PATH,
            secure=settings.session_cookie_secure,
            httponly=True,
            samesite="Lax",
        )
        return response

    txn = _transaction()
    state = request.args.get("state", "")
    if not hmac.compare_digest(state.encode(), txn.state.encode()):
        raise _no_signin("the sign-in answer does not belong to the sign-in in progress (state)")
    if "error" in request.args:
        raise BadRequest([Issue("login", "the identity provider refused the sign-in")])
    code = request.args.get("code", "")
    if not code or len(code) > 4096:
        raise BadRequest([Issue("login", "the identity provider sent no sign-in code", "code")])
    claims = _client().finish(_redirect_uri(), code, txn)
    settings: Settings = _state()["settings"]
    session.clear()  # a new session: nothing planted before sign-in survives it
    session[_SESSION_KEY] = {"claims": claims, "exp": int(time.time()) + settings.oidc_session_max_age_s}
    session.permanent = True
    csrf.token()
    log.info("console sign-in")
    return _page(render_template("signed_in.html", target=txn.next))


@bp.post("/ui/sign-out")
def sign_out() -> Response:
    csrf.check()
    session.clear()
    return _page(render_template("signed_out.html"))


def session_principal() -> Principal | None:
    """The signed-in user's principal, or None when there is no sign-in or it has expired."""
    found = session.get(_SESSION_KEY)
    if not isinstance(found, dict):
        return None
    exp, claims = found.get("exp"), found.get("claims")
    if not isinstance(exp, int) or not isinstance(claims, dict) or exp <= time.time():
        session.pop(_SESSION_KEY, None)
        return None
    settings: Settings = _state()["settings"]
    try:
        return principal_from_session(claims, settings.oidc_scope_claim)
    except Unauthorized:
        return None


def sign_in_url() -> str:
    """Where a browser without a sign-in is sent: the sign-in page, back to this page afterwards."""
    return "/ui/sign-in?" + urlencode({"next": safe_next(request.full_path.rstrip("?"))})


def signed_in_as() -> str | None:
    """The name shown in the header: the user of the session's sign-in, None without one."""
    if "ivclms_signin" not in current_app.extensions:
        return None
    if current_app.config["SESSION_COOKIE_NAME"] not in request.cookies:
        return None  # not even looked at: a page without a session does not vary by cookie
    found = session.get(_SESSION_KEY)
    if not isinstance(found, dict) or not isinstance(found.get("claims"), dict):
        return None
    claims = found["claims"]
    for name in ("name", "preferred_username", "sub"):
        if isinstance(claims.get(name), str) and claims[name]:
            return str(claims[name])
    return None
