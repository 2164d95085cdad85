from click.testing import CliRunner

from service.cli import main


def test_help_lists_serve():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "serve" in result.output


def test_config_masks_secrets():
    env = {
        "IVCLMS_AUTH_JWT_SECRET": "super-secret-value-0123456789abcdef",
        "IVCLMS_FHIR_URL": "http://h/fhir",
    }
    result = CliRunner().invoke(main, ["config"], env=env)
    assert result.exit_code == 0, result.output
    assert "super-secret-value" not in result.output
    assert "IVCLMS_AUTH_JWT_SECRET=****" in result.output
    assert "# sync: on -> http://h/fhir" in result.output


def test_bad_configuration_is_a_clean_error_not_a_traceback():
    result = CliRunner().invoke(main, ["serve"], env={"IVCLMS_HTTP_PORT": "x", "IVCLMS_AUTH_DISABLED": "1"})
    assert result.exit_code == 1
    assert "configuration: IVCLMS_HTTP_PORT" in result.output
    assert "Traceback" not in result.output
