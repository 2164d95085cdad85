"""The definitions fetcher: copies from a Maven repository and checks the sha1; opens no socket."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from service.validation import fetch


def _m2(tmp_path: Path, content: bytes, sha1: str | None = None) -> Path:
    m2 = tmp_path / "m2"
    folder = m2 / fetch.GROUP / fetch.ARTIFACT / "1.0"
    folder.mkdir(parents=True)
    (folder / fetch.jar_name("1.0")).write_bytes(content)
    (folder / (fetch.jar_name("1.0") + ".sha1")).write_text(sha1 or hashlib.sha1(content).hexdigest())
    return m2


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    def refuse(url: str) -> bytes:
        raise AssertionError(f"unit tests must not download {url}")

    monkeypatch.setattr(fetch, "_download", refuse)


def test_copies_from_the_local_maven_repository_and_stamps_it(tmp_path):
    target = fetch.fetch(tmp_path / "out", version="1.0", m2=_m2(tmp_path, b"jar"))
    assert target.read_bytes() == b"jar"
    assert target.with_name(target.name + ".sha1").read_text().split()[0] == hashlib.sha1(b"jar").hexdigest()
    assert fetch.fetch(tmp_path / "out", version="1.0", m2=tmp_path / "nowhere") == target  # kept


def test_rejects_a_jar_whose_sha1_does_not_match(tmp_path):
    with pytest.raises(fetch.FetchError, match="sha1"):
        fetch.fetch(tmp_path / "out", version="1.0", m2=_m2(tmp_path, b"jar", sha1="0" * 40))
    assert not list((tmp_path / "out").glob("*.jar"))


def test_version_is_the_one_pinned_for_the_hapi_server():
    pom = Path(__file__).resolve().parents[3] / "tests" / "hapi" / "pom.xml"
    assert f"<hapi.fhir.version>{fetch.hapi_version()}</hapi.fhir.version>" in pom.read_text()


def test_hl7_test_cases_come_from_their_own_coordinates_and_are_checked_the_same_way(tmp_path):
    version = fetch.TEST_CASES_VERSION
    folder = tmp_path / "m2" / fetch.TEST_CASES_GROUP / fetch.TEST_CASES_ARTIFACT / version
    folder.mkdir(parents=True)
    name = fetch.jar_name(version, fetch.TEST_CASES_ARTIFACT)
    (folder / name).write_bytes(b"cases")
    (folder / (name + ".sha1")).write_text("0" * 40)
    with pytest.raises(fetch.FetchError, match="sha1"):
        fetch.fetch_test_cases(tmp_path / "out", m2=tmp_path / "m2")
    (folder / (name + ".sha1")).write_text(hashlib.sha1(b"cases").hexdigest())
    target = fetch.fetch_test_cases(tmp_path / "out", m2=tmp_path / "m2")
    assert target.name == f"fhir-test-cases-{version}.jar" and target.read_bytes() == b"cases"
