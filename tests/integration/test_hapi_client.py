import pytest

from service.fhir.client import FhirNotFound

SYSTEM = "urn:ivclms:test:mrn"


def test_create_and_read_back_a_patient(hapi, tag):
    created = hapi.create(
        {
            "resourceType": "Patient",
            "identifier": [{"system": SYSTEM, "value": tag}],
            "gender": "female",
            "birthDate": "1968-03-14",
        }
    )
    assert created["id"]
    read = hapi.read("Patient", created["id"])
    assert read["identifier"] == [{"system": SYSTEM, "value": tag}]
    assert read["gender"] == "female"
    assert read["meta"]["versionId"] == "1"
    found = hapi.search("Patient", {"identifier": f"{SYSTEM}|{tag}"})
    assert found["total"] == 1


def test_conditional_update_transaction_is_idempotent(hapi, tag):
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": tag}]},
                "request": {"method": "PUT", "url": f"Patient?identifier={SYSTEM}|{tag}"},
            }
        ],
    }
    first = hapi.transaction(bundle, idempotent=True)
    second = hapi.transaction(bundle, idempotent=True)
    assert first["type"] == "transaction-response"
    assert first["entry"][0]["response"]["status"].startswith("201")
    loc1 = first["entry"][0]["response"]["location"].split("/_history")[0]
    loc2 = second["entry"][0]["response"]["location"].split("/_history")[0]
    assert loc1 == loc2
    assert hapi.search("Patient", {"identifier": f"{SYSTEM}|{tag}"})["total"] == 1


def test_missing_resource_is_typed_not_found(hapi, tag):
    with pytest.raises(FhirNotFound) as err:
        hapi.read("Patient", tag)
    assert err.value.status == 404
    assert err.value.outcome is not None
