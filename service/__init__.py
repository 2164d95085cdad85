"""IVC-LMS FHIR interoperability service."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from flask import Flask

    from service.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the application; nothing binds to an app at import time."""
    from service.api import build_app

    return build_app(settings)
