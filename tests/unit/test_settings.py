from pathlib import Path

import pytest

from service.settings import SETTINGS_DOC, Settings, SettingsError

OPEN = {"IVCLMS_AUTH_DISABLED": "true"}


def test_defaults_are_embedded_and_sync_off():
    s = Settings.from_env(OPEN)
    assert s.database_url.startswith("sqlite:///")
    assert s.database_url.endswith("data/ivclms.sqlite3")
    assert not s.sync_enabled
    assert s.fhir_verify_tls is True
    assert s.http_max_body_bytes > 0


def test_auth_is_on_by_default_and_needs_a_key():
    with pytest.raises(SettingsError, match="authentication is on by default"):
        Settings.from_env({})
    assert Settings.from_env({"IVCLMS_AUTH_JWT_SECRET": "x" * 32}).auth_disabled is False


def test_values_are_parsed_by_type(tmp_path: Path):
    s = Settings.from_env(
        {
            **OPEN,
            "IVCLMS_HTTP_PORT": "9000",
            "IVCLMS_FHIR_VERIFY_TLS": "no",
            "IVCLMS_DATA_DIR": str(tmp_path),
            "IVCLMS_FHIR_TIMEOUT_S": "2.5",
        }
    )
    assert (s.http_port, s.fhir_verify_tls, s.data_dir, s.fhir_timeout_s) == (9000, False, tmp_path, 2.5)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"IVCLMS_HTTP_PORT": "eighty"}, "IVCLMS_HTTP_PORT"),
        ({"IVCLMS_FHIR_VERIFY_TLS": "maybe"}, "expected true or false"),
        ({"IVCLMS_FHIR_AUTH_MODE": "kerberos"}, "FHIR_AUTH_MODE must be one of"),
        ({"IVCLMS_FHIR_AUTH_MODE": "bearer"}, "IVCLMS_FHIR_TOKEN is required"),
        ({"IVCLMS_FHIR_AUTH_MODE": "basic", "IVCLMS_FHIR_USERNAME": "u"}, "required for basic auth"),
        ({"IVCLMS_FHIR_AUTH_MODE": "oauth2"}, "required for oauth2"),
        ({"IVCLMS_HTTP_MAX_BODY_BYTES": "0"}, "must be positive"),
        ({"IVCLMS_DB_ULR": "typo"}, "unknown setting"),
    ],
)
def test_bad_configuration_fails_at_start_up(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**OPEN, **env})


def test_harness_variables_are_not_service_settings():
    harness = {"IVCLMS_HAPI_PORT": "8090", "IVCLMS_PG_PORT": "1", "IVCLMS_OAUTH_PORT": "8095"}
    assert Settings.from_env({**OPEN, **harness}).http_port == 8080


def test_every_setting_is_documented_in_the_readme():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [env for env, _default, _doc in SETTINGS_DOC if f"`{env}`" not in readme]
    assert not missing, f"README configuration table lacks {missing}"
