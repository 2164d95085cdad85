"""IVC-LMS FHIR interoperability service."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING


def _version() -> str:
    """``[project] version`` of pyproject.toml: the one place the version is written (the service, the
    CLI, OpenAPI and the FHIR package's resources all report it). Read from the file when the source
    tree is there (an editable install's metadata keeps the version it was installed with until it is
    reinstalled), else from the installed distribution."""
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    return metadata.version("ivclms")


__version__ = _version()

if TYPE_CHECKING:
    from flask import Flask

    from service.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the application; nothing binds to an app at import time."""
    from service.api import build_app

    return build_app(settings)
