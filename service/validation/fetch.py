"""Place HAPI's published R4 definitions jar in ``data/fhir-r4/`` (copy from ~/.m2, else download).

The local validator reads the base FHIR R4 StructureDefinitions, ValueSets and CodeSystems from
``ca.uhn.hapi.fhir:hapi-fhir-validation-resources-r4`` at the same version as the HAPI server the
integration tests run (``<hapi.fhir.version>`` in tests/hapi/pom.xml), so both validators start from
identical base definitions. A download is checked against the sha1 Maven Central publishes beside it.

    python -m service.validation.fetch [DIR]     # DIR defaults to <repo>/data/fhir-r4
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
TIMEOUT_S = 120


class FetchError(RuntimeError):
    """The jar could not be placed; the message says why."""


def hapi_version(pom: Path = POM) -> str:
    """The one pinned HAPI FHIR version (tests/hapi/pom.xml), so the definitions match the test server."""
    found = re.search(r"<hapi\.fhir\.version>\s*([^<\s]+)\s*</hapi\.fhir\.version>", pom.read_text())
    if not found:
        raise FetchError(f"{pom}: no <hapi.fhir.version>")
    return found.group(1)


def jar_name(version: str) -> str:
    return f"{ARTIFACT}-{version}.jar"


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
    """The jar in ``directory``: kept if its sha1 file matches, copied from the local Maven
    repository if there, else downloaded from Maven Central and verified against the published sha1."""
    version = version or hapi_version()
    target = jar_path(directory, version)
    stamp = target.with_name(target.name + ".sha1")
    if target.is_file() and stamp.is_file() and stamp.read_text().split()[0] == _sha1(target):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    local = (m2 or Path.home() / ".m2" / "repository") / GROUP / ARTIFACT / version / jar_name(version)
    tmp = target.with_name(target.name + ".part")
    if local.is_file():
        shutil.copyfile(local, tmp)
        sidecar = local.with_name(local.name + ".sha1")
        expected = sidecar.read_text().split()[0] if sidecar.is_file() else _sha1(tmp)
        source = str(local)
    else:
        url = f"{CENTRAL}/{GROUP}/{ARTIFACT}/{version}/{jar_name(version)}"
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
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    try:
        path = fetch(args.directory)
    except (FetchError, OSError) as error:
        print(f"r4-definitions: {error}", file=sys.stderr)
        return 1
    print(f"r4-definitions: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
