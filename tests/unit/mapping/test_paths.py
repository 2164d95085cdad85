import pytest

from service.mapping.paths import PathError, get, get_all, has_every, parse, put, put_all

EXT = "https://fhir.ivc-lms.org/StructureDefinition/ivclms-ivc-segment-from"


def test_put_then_get_round_trips_through_slices():
    r: dict = {"resourceType": "Observation"}
    put(r, f"extension({EXT}).valueCodeableConcept", {"text": "II"})
    put(r, "component(http://loinc.org|33728-7).valueQuantity.value", 9.0)
    put(r, "component(http://loinc.org|33729-5).valueQuantity.value", 6.5)
    put(r, "identifier[1].value", "b")
    put(r, "identifier[0].value", "a")
    assert r["extension"] == [{"url": EXT, "valueCodeableConcept": {"text": "II"}}]
    assert [c["code"]["coding"][0]["code"] for c in r["component"]] == ["33728-7", "33729-5"]
    assert get(r, "component(http://loinc.org|33729-5).valueQuantity.value") == 6.5
    assert get(r, f"extension({EXT}).valueCodeableConcept.text") == "II"
    assert [i["value"] for i in r["identifier"]] == ["a", "b"]


def test_get_of_missing_is_none():
    r = {"resourceType": "Condition", "extension": [{"url": "x", "valueBoolean": True}]}
    assert get(r, f"extension({EXT}).valueBoolean") is None
    assert get(r, "extension(x).valueBoolean") is True
    assert get(r, "code.coding.code") is None
    assert get(r, "identifier[3].value") is None


def test_second_put_into_a_slice_reuses_it():
    r: dict = {}
    put(r, f"extension({EXT}).valueCode", "I")
    put(r, f"extension({EXT}).valueCode", "II")
    assert r == {"extension": [{"url": EXT, "valueCode": "II"}]}


@pytest.mark.parametrize("bad", ["a..b", "component(nocode).value", "a[x]"])
def test_bad_paths_are_rejected(bad):
    with pytest.raises(PathError):
        parse(bad)


def test_every_item_of_a_list_or_slice():
    r: dict = {}
    put_all(r, f"extension({EXT})[*].valueCode", ["a", "b"])
    put_all(r, "bodySite[*]", [{"text": "x"}])
    put(r, "extension(other).valueCode", "z")
    assert get_all(r, f"extension({EXT})[*].valueCode") == ["a", "b"]
    assert get_all(r, "bodySite[*]") == [{"text": "x"}]
    assert get_all(r, "note[*].text") == []
    assert has_every("component[*]") and not has_every("component[0]")


def test_position_inside_a_slice():
    r: dict = {}
    put(r, "component(s|b)[1].valueInteger", 2)
    put(r, "component(s|a).valueInteger", 0)
    put(r, "component(s|b).valueInteger", 1)
    assert get(r, "component(s|b)[1].valueInteger") == 2
    assert get(r, "component(s|b)[0].valueInteger") == 1
    assert get(r, "component(s|b)[2].valueInteger") is None


@pytest.mark.parametrize("bad", ["a[*].b[*]", "x(s|c)[y]"])
def test_more_bad_paths(bad):
    with pytest.raises(PathError):
        parse(bad)


def test_every_needs_get_all():
    with pytest.raises(PathError):
        get({"a": [{}]}, "a[*].b")
    with pytest.raises(PathError):
        put_all({}, "extension(u)[*]", [{}])
