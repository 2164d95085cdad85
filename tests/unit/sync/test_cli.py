"""``ivclms worker``, ``ivclms sync ...`` and ``ivclms db upgrade`` in-process (no sockets: responses)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from service.cli import main
from service.intake import Intake
from service.store import migrate
from service.store.tables import outbox
from tests.unit.sync.conftest import BASE, example


@pytest.fixture
def env(tmp_path, db_url):
    return {
        "IVCLMS_DATA_DIR": str(tmp_path),
        "IVCLMS_DB_URL": db_url,
        "IVCLMS_AUTH_DISABLED": "true",
        "IVCLMS_FHIR_URL": BASE,
    }


@pytest.fixture
def db(engine):
    return engine


def run(env, *args):
    return CliRunner().invoke(main, list(args), env=env)


def states(engine):
    with engine.connect() as conn:
        return [r.state for r in conn.execute(outbox.select().order_by(outbox.c.id))]


def test_worker_refuses_to_start_without_a_fhir_server(env):
    result = run({**env, "IVCLMS_FHIR_URL": ""}, "worker", "--once")
    assert result.exit_code == 1
    assert "IVCLMS_FHIR_URL is empty" in result.output


def test_db_upgrade_migrates_and_is_idempotent(env, tmp_path):
    first = run(env, "db", "upgrade")
    assert first.exit_code == 0, first.output
    assert f"schema at {migrate.head()}" in first.output
    assert run(env, "db", "upgrade").exit_code == 0


def test_worker_once_delivers_and_status_shows_it(env, db, fhir):
    intake = Intake(db, enqueue=True)
    intake.submit(intake.prepare(example(0)), "test")
    result = run(env, "worker", "--once", "--batch-size", "5")
    assert result.exit_code == 0, result.output
    assert "1 entries processed" in result.output
    assert len(fhir.transactions) == 1
    assert states(db) == ["done"]

    shown = run(env, "sync", "status")
    assert shown.exit_code == 0, shown.output
    assert "done=1" in shown.output and "oldest undelivered: none" in shown.output
    as_json = json.loads(run(env, "sync", "status", "--json").output)
    assert as_json["depth"]["done"] == 1

    verified = run(env, "sync", "verify")
    assert verified.exit_code == 0, verified.output
    assert "0 missing, 0 drifted, 0 unrecorded, 0 orphaned" in verified.output

    patient = next(k for k in fhir.resources if k.startswith("Patient/"))
    fhir.resources[patient]["birthDate"] = "1900-01-01"
    drifted = run(env, "sync", "verify")
    assert drifted.exit_code == 1
    assert f"drifted {patient}" in drifted.output and "at birthDate" in drifted.output
    assert "1900" not in drifted.output  # paths, never values


def test_sync_retry_from_the_command_line(env, db):
    intake = Intake(db, enqueue=True)
    intake.submit(intake.prepare(example(0)), "test")
    with db.begin() as conn:
        conn.execute(update(outbox).values(state="dead", last_error="rejected: HTTP 400"))
    listed = run(env, "sync", "status")
    assert "dead #1: case" in listed.output and "rejected: HTTP 400" in listed.output

    assert run(env, "sync", "retry").exit_code == 2
    result = run(env, "sync", "retry", "1")
    assert result.exit_code == 0, result.output
    assert "entry 1: pending" in result.output
    again = run(env, "sync", "retry", "1")
    assert again.exit_code == 1 and "only a dead entry can be retried" in again.output
    assert run(env, "sync", "retry", "99").exit_code == 1

    with db.begin() as conn:
        conn.execute(update(outbox).values(state="dead"))
    assert "1 pending" in run(env, "sync", "retry", "--all-dead").output
