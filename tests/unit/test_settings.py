from pathlib import Path

import pytest

from service.settings import SETTINGS_DOC, Settings, SettingsError

OPEN = {"IVCLMS_AUTH_DISABLED": "true"}


def test_defaults_are_embedded_and_sync_off():
    s = Settings.from_env(OPEN)
    assert s.database_url.startswith("sqlite:///")
    assert s.database_url == f"sqlite:///{Path.home()}/.local/share/ivclms/ivclms.sqlite3"
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


# ---- issue 12, finding 6: strong keys ------------------------------------------------------------
# RFC 7518, section 3.2: "A key of the same size as the hash output (for instance, 256 bits for
# "HS256") or larger MUST be used with this algorithm."


@pytest.mark.parametrize("name", ["IVCLMS_AUTH_JWT_SECRET", "IVCLMS_REGISTRY_PSEUDONYM_KEY"])
def test_finding_6_weak_keys_are_refused_at_start_up(name):
    base = {"IVCLMS_AUTH_JWT_SECRET": "k" * 32}
    for weak in ("a", "x" * 31, "é" * 15):  # "é" * 15 is 15 characters but 30 bytes: bytes count
        with pytest.raises(SettingsError, match=f"{name} is {len(weak.encode())} bytes; at least 32"):
            Settings.from_env({**base, name: weak})
    assert getattr(Settings.from_env({**base, name: "é" * 16}), name.removeprefix("IVCLMS_").lower())
    with pytest.raises(SettingsError, match=name):
        Settings(auth_jwt_secret="k" * 32).replace(**{name.removeprefix("IVCLMS_").lower(): "short"})


def test_finding_6_an_app_with_a_weak_secret_does_not_start(tmp_path):
    from service import create_app

    with pytest.raises(SettingsError, match="IVCLMS_AUTH_JWT_SECRET"):
        create_app(Settings(data_dir=tmp_path, auth_jwt_secret="a", db_migrate=False))


def test_public_base_url_and_trusted_hosts_are_checked():
    base = {"IVCLMS_AUTH_JWT_SECRET": "k" * 32}
    assert Settings.from_env(base).trusted_hosts == ["localhost", "127.0.0.1"]
    for bad in ("ivclms.example.org", "ftp://x/", "https://x/?a=1"):
        with pytest.raises(SettingsError, match="IVCLMS_HTTP_PUBLIC_BASE_URL"):
            Settings.from_env({**base, "IVCLMS_HTTP_PUBLIC_BASE_URL": bad})
    with pytest.raises(SettingsError, match="IVCLMS_HTTP_TRUSTED_HOSTS"):
        Settings.from_env({**base, "IVCLMS_HTTP_TRUSTED_HOSTS": " , "})
    assert Settings.from_env(
        {**base, "IVCLMS_HTTP_TRUSTED_HOSTS": "", "IVCLMS_HTTP_PUBLIC_BASE_URL": "https://ivclms.example.org"}
    )
