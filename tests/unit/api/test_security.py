import pytest
from flask import Blueprint, g

from service import create_app
from service.auth import require
from tests.tokens import token


@pytest.fixture
def protected(settings):
    app = create_app(settings)
    bp = Blueprint("protected", __name__)

    @bp.get("/protected/Patient")
    def read_patient():
        require(g.principal, "Patient", "r")
        return {"who": g.principal.subject}

    app.register_blueprint(bp)
    yield app.test_client()
    app.extensions["ivclms"].engine.dispose()


def test_public_endpoints_need_no_token(client):
    for path in ("/healthz", "/readyz", "/fhir/metadata"):
        assert client.get(path).status_code == 200, path


def test_missing_token_is_401_with_challenge(protected):
    resp = protected.get("/protected/Patient")
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.get_json()["issue"][0]["code"] == "login"


@pytest.mark.parametrize(
    ("tok", "message"),
    [
        (token(exp_offset=-10), "expired"),
        (token(secret="another-secret-that-is-long-enough-0123456789"), "not valid"),
        ("not-a-jwt", "not valid"),
    ],
)
def test_bad_tokens_are_401(protected, tok, message):
    resp = protected.get("/protected/Patient", headers={"Authorization": f"Bearer {tok}"})
    assert resp.status_code == 401
    assert message in resp.get_json()["issue"][0]["diagnostics"]


def test_token_without_the_scope_is_403(protected):
    resp = protected.get(
        "/protected/Patient", headers={"Authorization": f"Bearer {token('system/Observation.rs')}"}
    )
    assert resp.status_code == 403
    assert resp.get_json()["issue"][0]["code"] == "forbidden"


@pytest.mark.parametrize(
    "scope", ["system/*.cruds", "system/Patient.rs", "system/Patient.read", "system/*.r"]
)
def test_token_with_the_scope_is_let_in(protected, scope):
    resp = protected.get("/protected/Patient", headers={"Authorization": f"Bearer {token(scope)}"})
    assert resp.status_code == 200
    assert resp.get_json() == {"who": "registry-a"}


@pytest.mark.parametrize(
    ("scope", "rtype", "action", "expected"),
    [
        ("system/*.cruds", "Condition", "c", True),
        ("system/Patient.rs", "Patient", "c", False),
        ("system/*.write", "Patient", "u", True),
        ("system/*.write", "Patient", "r", False),
        ("user/*.cruds", "Patient", "r", False),
        ("patient/Patient.r", "Patient", "r", False),
        ("system/Patient.xyz", "Patient", "r", False),
    ],
)
def test_scope_matrix(scope, rtype, action, expected):
    from service.auth import Principal

    assert Principal("x", frozenset({scope})).allows(rtype, action) is expected


def test_second_review_owner_keys_cannot_meet_through_a_hash_sign():
    """iss "a" + sub "b#sub:c" and iss "a#sub:b" + sub "c" both gave the owner "a#sub:b#sub:c" (one could
    read the other's exports); each part is percent-encoded now."""
    from service.auth.tokens import principal_from_claims

    one = principal_from_claims({"iss": "a", "sub": "b#sub:c", "scope": ""})
    two = principal_from_claims({"iss": "a#sub:b", "sub": "c", "scope": ""})
    assert one.owner != two.owner and one.client != two.client
