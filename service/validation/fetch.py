"""Place HAPI's published R4 definitions jar in ``data/fhir-r4/`` (copy from ~/.m2, else download).

The local validator reads the base FHIR R4 StructureDefinitions, ValueSets and CodeSystems from
``ca.uhn.hapi.fhir:hapi-fhir-validation-resources-r4`` at the same version as the HAPI server the
integration tests run (``<hapi.fhir.version>`` in tests/hapi/pom.xml), so both validators start from
identical base definitions. A download is checked against the sha1 Maven Central publishes beside it.

    python -m service.validation.fetch [DIR]     # DIR defaults to <repo>/data/fhir-r4

The same code places HL7's validator test cases (``org.hl7.fhir.testcases:fhir-test-cases``, pinned in
``TEST_CASES_VERSION``) in ``data/fhir-test-cases/`` for the conformance test
(tests/conformance/test_hl7_validator_cases.py):

    python -m service.validation.fetch --test-cases [DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / "data" / "fhir-r4"
POM = ROOT / "tests" / "hapi" / "pom.xml"
GROUP = "ca/uhn/hapi/fhir"
ARTIFACT = "hapi-fhir-validation-resources-r4"
CENTRAL = "https://repo1.maven.org/maven2"
TEST_CASES_GROUP = "org/hl7/fhir/testcases"
TEST_CASES_ARTIFACT = "fhir-test-cases"
TEST_CASES_VERSION = "1.7.69"
TEST_CASES_DIR = ROOT / "data" / "fhir-test-cases"
TIMEOUT_S = 120


class FetchError(RuntimeError):
    """The jar could not be placed; the message says why."""


def hapi_version(pom: Path = POM) -> str:
    """The one pinned HAPI FHIR version (tests/hapi/pom.xml), so the definitions match the test server."""
    found = re.search(r"<hapi\.fhir\.version>\s*([^<\s]+)\s*</hapi\.fhir\.version>", pom.read_text())
    if not found:
        raise FetchError(f"{pom}: no <hapi.fhir.version>")
    return found.group(1)


def jar_name(version: str, artifact: str = ARTIFACT) -> str:
    return f"{artifact}-{version}.jar"


def jar_path(directory: Path = DEFAULT_DIR, version: str | None = None) -> Path:
    """Where the fetched jar lives (it is never committed: data/ is ignored by git)."""
    return directory / jar_name(version or hapi_version())


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
        data: bytes = resp.read()
    return data


def fetch(directory: Path = DEFAULT_DIR, version: str | None = None, m2: Path | None = None) -> Path:
    """The definitions jar in ``directory`` (see ``fetch_artifact``)."""
    return fetch_artifact(GROUP, ARTIFACT, version or hapi_version(), directory, m2)


def test_cases_jar(directory: Path = TEST_CASES_DIR) -> Path:
    """Where the HL7 validator test-case jar lives once fetched."""
    return directory / jar_name(TEST_CASES_VERSION, TEST_CASES_ARTIFACT)


def fetch_test_cases(directory: Path = TEST_CASES_DIR, m2: Path | None = None) -> Path:
    """HL7's validator test cases (pinned version) in ``directory`` (see ``fetch_artifact``)."""
    return fetch_artifact(TEST_CASES_GROUP, TEST_CASES_ARTIFACT, TEST_CASES_VERSION, directory, m2)


def fetch_artifact(group: str, artifact: str, version: str, directory: Path, m2: Path | None = None) -> Path:
    """The jar in ``directory``: kept if its sha1 file matches, copied from the local Maven
    repository if there, else downloaded from Maven Central and verified against the published sha1."""
    target = directory / jar_name(version, artifact)
    stamp = target.with_name(target.name + ".sha1")
    if target.is_file() and stamp.is_file() and stamp.read_text().split()[0] == _sha1(target):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    local = (m2 or Path.home() / ".m2" / "repository") / group / artifact / version / target.name
    tmp = target.with_name(target.name + ".part")
    if local.is_file():
        shutil.copyfile(local, tmp)
        sidecar = local.with_name(local.name + ".sha1")
        expected = sidecar.read_text().split()[0] if sidecar.is_file() else _sha1(tmp)
        source = str(local)
    else:
        url = f"{CENTRAL}/{group}/{artifact}/{version}/{target.name}"
        expected = _download(url + ".sha1").decode().split()[0]
        tmp.write_bytes(_download(url))
        source = url
    actual = _sha1(tmp)
    if actual != expected:
        tmp.unlink()
        raise FetchError(f"{source}: sha1 {actual} does not match the published {expected}")
    tmp.replace(target)
    stamp.write_text(f"{actual}  {target.name}\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--test-cases", action="store_true", help="HL7's validator test cases instead")
    parser.add_argument("directory", nargs="?", type=Path, default=None)
    args = parser.parse_args(argv)
    name = "fhir-test-cases" if args.test_cases else "r4-definitions"
    try:
        if args.test_cases:
            path = fetch_test_cases(args.directory or TEST_CASES_DIR)
        else:
            path = fetch(args.directory or DEFAULT_DIR)
    except (FetchError, OSError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 1
    print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
