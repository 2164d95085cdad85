"""The validator cache built ahead of use (the Docker image's build step) is only read afterwards."""

import shutil
import subprocess
import sys
from pathlib import Path

from service.validation.fetch import DEFAULT_DIR, jar_path


def _state(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_a_warmed_cache_is_read_not_written(tmp_path: Path):
    base = tmp_path / "fhir-r4"
    base.mkdir()
    jar = jar_path(DEFAULT_DIR)
    shutil.copy2(jar, base / jar.name)
    if (DEFAULT_DIR / "cache").is_dir():  # a current cache is reused (building it takes ~40 s)
        shutil.copytree(DEFAULT_DIR / "cache", base / "cache")
    command = [sys.executable, "-m", "service.validation.warm", str(base)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr
    assert sorted(p.name.split("-")[0] for p in (base / "cache").iterdir()) == ["base", "snapshots"]
    before = _state(base)
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert _state(base) == before  # the service user (no write access to /app) needs no more
