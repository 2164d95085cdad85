"""What every request may use, built once per application from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine

from service.auth import TokenVerifier
from service.db import make_engine
from service.fhir.client import FhirClient
from service.intake import Intake
from service.settings import Settings
from service.store import migrate


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    verifier: TokenVerifier | None
    fhir: FhirClient | None
    intake: Intake

    @classmethod
    def build(cls, settings: Settings) -> AppContext:
        engine = make_engine(settings)
        if settings.db_migrate:
            migrate.upgrade(engine)
        return cls(
            settings=settings,
            engine=engine,
            verifier=None if settings.auth_disabled else TokenVerifier(settings),
            fhir=FhirClient.from_settings(settings) if settings.sync_enabled else None,
            intake=Intake(engine, enqueue=settings.sync_enabled),
        )


def ctx() -> AppContext:
    value: AppContext = current_app.extensions["ivclms"]
    return value
