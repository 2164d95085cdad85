from flask import Blueprint

from service import create_app


def test_metadata_is_a_fhir_capability_statement(client):
    resp = client.get("/fhir/metadata")
    assert resp.status_code == 200
    assert resp.content_type == "application/fhir+json"
    body = resp.get_json()
    assert body["resourceType"] == "CapabilityStatement"
    assert body["fhirVersion"] == "4.0.1"
    assert body["kind"] == "instance"
    assert body["rest"][0]["mode"] == "server"
    assert "required" in body["rest"][0]["security"]["description"]


def test_unknown_route_is_an_operation_outcome(client):
    resp = client.get("/no/such/thing")
    assert resp.status_code == 404
    assert resp.content_type == "application/fhir+json"
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "not-found"


def test_wrong_method_is_405_operation_outcome(client):
    resp = client.post("/fhir/metadata")
    assert resp.status_code == 405
    assert resp.get_json()["issue"][0]["code"] == "not-supported"


def _boom_app(settings):
    app = create_app(settings.replace(auth_disabled=True))
    bp = Blueprint("boom", __name__)

    @bp.get("/boom")
    def boom():
        raise RuntimeError("secret patient detail in an exception")

    @bp.post("/echo-size")
    def echo_size():
        from flask import request

        return {"n": len(request.get_data())}

    app.register_blueprint(bp)
    return app


def test_unexpected_error_is_500_without_details(settings):
    resp = _boom_app(settings).test_client().get("/boom")
    assert resp.status_code == 500
    text = resp.get_data(as_text=True)
    assert "secret patient detail" not in text
    assert "Traceback" not in text
    assert resp.get_json()["issue"][0]["code"] == "exception"


def test_oversized_body_is_413_operation_outcome(settings):
    app = _boom_app(settings.replace(http_max_body_bytes=100))
    resp = app.test_client().post("/echo-size", data=b"x" * 101)
    assert resp.status_code == 413
    body = resp.get_json()
    assert body["issue"][0]["code"] == "too-long"
    assert "IVCLMS_HTTP_MAX_BODY_BYTES" in body["issue"][0]["diagnostics"]
    assert app.test_client().post("/echo-size", data=b"x" * 100).status_code == 200


def test_capability_statement_lists_what_the_read_side_really_answers(client):
    from tests.support.auth import auth_headers as _auth

    body = client.get("/fhir/metadata").get_json()
    resources = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert {"Patient", "Observation", "Condition", "Procedure", "Provenance", "AuditEvent"} <= set(resources)
    for kind, entry in resources.items():
        if kind == "AuditEvent":
            continue
        for param in entry["searchParam"]:
            value = {"date": "ge2000-01-01", "_lastUpdated": "ge2000-01-01"}.get(param["name"], "x")
            resp = client.get(
                f"/fhir/{kind}",
                query_string={param["name"]: value},
                headers={**_auth(), "Prefer": "handling=strict"},
            )
            assert resp.status_code == 200, (kind, param["name"], resp.get_json())
        for include in entry["searchInclude"]:
            resp = client.get(f"/fhir/{kind}", query_string={"_include": include}, headers=_auth())
            assert resp.status_code == 200, include
