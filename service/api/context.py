"""What every request may use, built once per application from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine

from service.auth import TokenVerifier
from service.db import make_engine
from service.fhir.client import FhirClient
from service.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    verifier: TokenVerifier | None
    fhir: FhirClient | None

    @classmethod
    def build(cls, settings: Settings) -> AppContext:
        return cls(
            settings=settings,
            engine=make_engine(settings),
            verifier=None if settings.auth_disabled else TokenVerifier(settings),
            fhir=FhirClient.from_settings(settings) if settings.sync_enabled else None,
        )


def ctx() -> AppContext:
    value: AppContext = current_app.extensions["ivclms"]
    return value
