"""scripts/test and scripts/run, run for real against stand-ins for the tools they call.

Each stand-in (setup, hapi, postgres, oauth, ruff, mypy, pytest, pip) appends its name and arguments
to a log, so a test sees exactly which servers a path starts and what it installs, in a second.
"""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = """#!/usr/bin/env bash
echo "{name} $*" >> "{log}"
{body}
"""


def _stand_in(path: Path, log: Path, body: str = "exit 0") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STAND_IN.format(name=path.name, log=log, body=body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the repository's scripts with every tool they call replaced by a stand-in."""
    log = tmp_path / "calls.log"
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    for name in ("test", "run"):
        shutil.copy2(ROOT / "scripts" / name, root / "scripts" / name)
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    for name in ("setup", "hapi", "postgres", "oauth", "r4-definitions"):
        _stand_in(root / "scripts" / name, log)
    for name in ("ruff", "mypy"):
        _stand_in(root / ".venv/bin" / name, log)
    _stand_in(root / ".venv/bin/pytest", log, 'exit "${PYTEST_RC:-0}"')
    _stand_in(root / ".venv/bin/python", log)
    _stand_in(root / ".venv/bin/ivclms", log, 'echo "IVCLMS_DATA_DIR=/somewhere"')
    return root, log


def _run(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(root / "scripts" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_quick_loop_starts_no_server_and_deselects_integration_tests(repo: tuple[Path, Path]):
    root, log = repo
    done = _run(root, "test", "--quick", "tests/unit/test_cli.py")
    assert done.returncode == 0, done.stderr
    calls = _calls(log)
    assert not [c for c in calls if c.split()[0] in ("hapi", "postgres", "oauth")], calls
    assert "pytest -m not integration tests/unit/test_cli.py" in calls
    assert [c.split()[0] for c in calls] == ["setup", "ruff", "ruff", "mypy", "pytest"]


def test_quick_loop_passes_on_the_pytest_exit_code(repo: tuple[Path, Path]):
    root, _log = repo
    assert _run(root, "test", "--quick", PYTEST_RC="1").returncode == 1


def test_without_arguments_the_full_path_starts_every_server_and_stops_them(repo: tuple[Path, Path]):
    root, log = repo
    done = _run(root, "test")
    assert done.returncode == 0, done.stderr
    calls = _calls(log)
    for server in ("postgres", "hapi", "oauth"):
        assert f"{server} start" in calls and f"{server} stop" in calls, calls
    assert "pytest " in calls  # no marker filter: every test, integration included


def test_run_installs_only_the_serving_dependencies_with_visible_progress(repo: tuple[Path, Path]):
    root, log = repo
    done = _run(root, "run", IVCLMS_AUTH_JWT_SECRET="")
    assert done.returncode == 0, done.stderr
    installs = [c for c in _calls(log) if c.startswith("python -m pip install")]
    assert installs[-1] == "python -m pip install --progress-bar on -e ."  # no [test] extras
    assert not [c for c in installs if " -q" in c]
    assert "setup" not in [c.split()[0] for c in _calls(log)]
    assert "run: installing ivclms and what serving needs" in done.stdout
    assert "run: data directory /somewhere" in done.stdout
    assert _calls(log)[-1] == "ivclms serve"
