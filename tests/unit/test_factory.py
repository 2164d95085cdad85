import logging

from service import create_app
from service.settings import Settings
from tests.support.auth import TEST_SECRET


def test_factory_builds_independent_apps(tmp_path):
    a = create_app(Settings(data_dir=tmp_path / "a", auth_disabled=True))
    b = create_app(Settings(data_dir=tmp_path / "b", auth_disabled=True))
    assert a is not b
    assert a.extensions["ivclms"].settings.data_dir != b.extensions["ivclms"].settings.data_dir


def test_body_size_limit_comes_from_settings(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, auth_disabled=True, http_max_body_bytes=1234))
    assert app.config["MAX_CONTENT_LENGTH"] == 1234


def test_start_up_says_when_sync_is_off_and_auth_disabled(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ivclms"):
        create_app(Settings(data_dir=tmp_path, auth_disabled=True))
    text = caplog.text
    assert "sync to a FHIR server is off" in text
    assert "AUTHENTICATION IS DISABLED" in text


def test_embedded_database_is_sqlite_in_wal_mode(tmp_path):
    # Its own app with no db_url (not the app fixture): the embedded database even in the PostgreSQL pass.
    app = create_app(Settings(data_dir=tmp_path, auth_jwt_secret=TEST_SECRET))
    engine = app.extensions["ivclms"].engine
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
