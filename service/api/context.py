"""What every request may use, built once per application from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import current_app
from sqlalchemy import Engine

from service.auth import TokenVerifier
from service.db import make_engine
from service.fhir.client import FhirClient
from service.intake import Intake
from service.limits import Limits
from service.metrics import Metrics
from service.settings import Settings
from service.store import migrate
from service.validation import Validator
from service.validation.definitions import PROFILES_DIR
from service.validation.fetch import DEFAULT_DIR
from service.validation.gate import bundle_check, shared_validator


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    verifier: TokenVerifier | None
    fhir: FhirClient | None
    intake: Intake
    validator: Validator
    metrics: Metrics

    @classmethod
    def build(cls, settings: Settings) -> AppContext:
        engine = make_engine(settings)
        if settings.db_migrate:
            migrate.upgrade(engine)
        base = (
            Path(settings.validation_definitions_dir) if settings.validation_definitions_dir else DEFAULT_DIR
        )
        validator = shared_validator(PROFILES_DIR, base)
        metrics = Metrics(engine)
        check = metrics.timed(bundle_check(validator)) if settings.validate_intake else None
        return cls(
            settings=settings,
            engine=engine,
            verifier=None if settings.auth_disabled else TokenVerifier(settings),
            fhir=FhirClient.from_settings(settings) if settings.sync_enabled else None,
            intake=Intake(
                engine,
                enqueue=settings.sync_enabled,
                check_bundle=check,
                limits=Limits.from_settings(settings),
            ),
            validator=validator,
            metrics=metrics,
        )


def ctx() -> AppContext:
    value: AppContext = current_app.extensions["ivclms"]
    return value
