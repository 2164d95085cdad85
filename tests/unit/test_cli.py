import csv
import datetime as dt
import io
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main
from service.mapping.forward import case_to_bundle
from service.model import validate_case

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("ivclms-*.json"))
SERIES = ROOT / "examples" / "ivclms-case-series.csv"
NOW = "2026-01-01T00:00:00Z"


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


def test_finding_17_config_masks_the_password_inside_database_and_server_urls():
    env = {
        "IVCLMS_AUTH_JWT_SECRET": "super-secret-value-0123456789abcdef",
        "IVCLMS_DB_URL": "postgresql+psycopg://ivclms:db-pass-w0rd@db.example:5432/ivclms",
        "IVCLMS_FHIR_URL": "https://sync:fhir-pass-w0rd@fhir.example/fhir?token=query-t0ken",
    }
    result = CliRunner().invoke(main, ["config"], env=env)
    assert result.exit_code == 0, result.output
    assert "db-pass-w0rd" not in result.output and "fhir-pass-w0rd" not in result.output
    assert "query-t0ken" not in result.output and "?token=***" in result.output  # outside review
    assert "IVCLMS_DB_URL=postgresql+psycopg://ivclms:***@db.example:5432/ivclms" in result.output
    assert "# effective database: postgresql+psycopg://ivclms:***@db.example:5432/ivclms" in result.output
    assert "# sync: on -> https://sync:***@fhir.example/fhir?token=***" in result.output


def test_bad_configuration_is_a_clean_error_not_a_traceback():
    result = CliRunner().invoke(main, ["serve"], env={"IVCLMS_HTTP_PORT": "x", "IVCLMS_AUTH_DISABLED": "1"})
    assert result.exit_code == 1
    assert "configuration: IVCLMS_HTTP_PORT" in result.output
    assert "Traceback" not in result.output


# ---- map / unmap / import -----------------------------------------------------------------------


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def example_data(name: str = "ivclms-001") -> dict:
    return json.loads(next(p for p in EXAMPLES if p.name.startswith(name)).read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_unmap_of_map_gives_back_the_example(path: Path, tmp_path: Path):
    mapped = run("map", str(path), "--now", NOW)
    assert mapped.exit_code == 0, mapped.output
    bundle_file = tmp_path / "bundle.json"
    bundle_file.write_text(mapped.stdout)
    unmapped = run("unmap", str(bundle_file))
    assert unmapped.exit_code == 0, unmapped.output
    assert json.loads(unmapped.stdout) == json.loads(path.read_text())


def test_map_prints_the_bundle_with_two_space_indent_in_insertion_order():
    result = run("map", str(EXAMPLES[0]), "--now", NOW)
    bundle = case_to_bundle(validate_case(example_data()), now=NOW)
    assert result.stdout == json.dumps(bundle, indent=2) + "\n"
    assert result.stderr == ""


def test_map_and_unmap_read_stdin():
    mapped = run("map", "-", "--now", NOW, input=EXAMPLES[0].read_text())
    assert mapped.exit_code == 0, mapped.output
    unmapped = run("unmap", "-", input=mapped.stdout)
    assert json.loads(unmapped.stdout) == example_data()


def test_map_records_the_current_utc_time_by_default():
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    result = run("map", str(EXAMPLES[0]))
    provenance = json.loads(result.stdout)["entry"][-1]["resource"]
    recorded = provenance["recorded"]
    assert recorded.endswith("Z") and len(recorded) == len(NOW)
    assert before <= dt.datetime.fromisoformat(recorded) <= dt.datetime.now(dt.UTC)


def test_map_of_an_invalid_case_prints_path_and_rule(tmp_path: Path):
    case = example_data()
    case["surgery"][0]["ivc_management"]["graft_material"] = None
    case_file = tmp_path / "case.json"
    case_file.write_text(json.dumps(case))
    result = run("map", str(case_file), "--now", NOW)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "surgery[0].ivc_management.graft_material: required when method is "
        "patch_cavoplasty or interposition_graft\n"
    )


def test_malformed_json_is_a_one_line_error():
    result = run("map", "-", input='{"case_id": "IVC-001",')
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: stdin: not valid JSON: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["map", "unmap", "import"])
def test_a_missing_file_is_a_one_line_error(command: str, tmp_path: Path):
    missing = tmp_path / "missing.json"
    result = run(command, str(missing))
    assert result.exit_code == 1
    assert result.stderr == f"Error: {missing}: No such file or directory\n"


def test_a_bad_now_is_a_usage_error():
    result = run("map", str(EXAMPLES[0]), "--now", "2026-01-01")
    assert result.exit_code == 2
    assert "is not an instant" in result.stderr


def test_unmap_of_a_case_says_it_is_not_a_bundle():
    result = run("unmap", str(EXAMPLES[0]))
    assert result.exit_code == 1
    assert result.stderr == f"Error: {EXAMPLES[0]}: not a FHIR Bundle (resourceType: None)\n"


def test_unmap_refuses_a_bundle_whose_surgery_was_not_done(tmp_path: Path):
    """The rules POST /fhir applies (mappings/negations.yaml): R4 Procedure.status "not-done: The
    procedure was terminated prior to any activity beyond preparation" is no surgery of the case."""
    bundle = case_to_bundle(validate_case(example_data()), now=NOW)
    i, surgery = next(
        (i, e["resource"])
        for i, e in enumerate(bundle["entry"])
        if e["resource"]["meta"]["profile"][0].endswith("ivclms-surgery")
    )
    surgery["status"] = "not-done"
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    result = run("unmap", str(path))
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"{path}: Bundle.entry[{i}].resource.status: a Procedure that was not done (status not-done)"
    )
    assert result.stdout == ""


def test_unmap_of_an_unmappable_bundle_is_a_one_line_error():
    bundle = case_to_bundle(validate_case(example_data()), now=NOW)
    bundle["entry"][0]["resource"]["gender"] = "robot"
    result = run("unmap", "-", input=json.dumps(bundle))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: stdin: cannot map back: Patient.gender: ")
    assert result.stderr.count("\n") == 1


def test_import_of_the_example_series_writes_a_bundle_per_case(tmp_path: Path):
    out = tmp_path / "bundles"
    result = run("import", str(SERIES), "--out", str(out), "--now", NOW)
    assert result.exit_code == 0, result.output
    assert (
        result.stderr == f"9 cases valid; 9 bundles written to {out} (not stored in the service's database)\n"
    )
    by_id = {case["case_id"]: case for case in map(json.loads, (p.read_text() for p in EXAMPLES))}
    assert sorted(p.name for p in out.iterdir()) == [f"{case_id}.bundle.json" for case_id in sorted(by_id)]
    for case_id, case in by_id.items():
        unmapped = run("unmap", str(out / f"{case_id}.bundle.json"))
        assert unmapped.exit_code == 0, unmapped.output
        assert json.loads(unmapped.stdout) == case


def test_import_is_all_or_nothing_and_names_sheet_columns_and_lines(tmp_path: Path):
    rows = list(csv.DictReader(io.StringIO(SERIES.read_text(), newline="")))
    rows[1]["patient_sex"] = "robot"  # a bad code: IVC-002
    rows[4]["diagnosis_date"] = ""  # a missing required cell: IVC-005
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    series = tmp_path / "series.csv"
    series.write_text(text.getvalue())
    out = tmp_path / "bundles"
    result = run("import", str(series), "--out", str(out), "--now", NOW)
    assert result.exit_code == 1
    # Data rows 2 and 5 are the sheet's lines 3 and 6 (the header is line 1, as a spreadsheet shows it).
    assert result.stderr.splitlines() == [
        "line 3: patient_sex: must be one of: female, male, other, unknown",
        "line 6: diagnosis_date: required",
        "2 rows rejected, 7 cases valid: nothing written (all or nothing)",
    ]
    assert not out.exists()  # like POST /cases/import: a bad row rejects the file


def test_import_without_out_only_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    result = run("import", "-", "--now", NOW, input=SERIES.read_text())
    assert list(tmp_path.iterdir()) == []
    assert result.exit_code == 0
    assert result.stderr == (
        "9 cases valid; nothing written (checked only: --out DIR writes the bundles; "
        "POST the file to /cases/import to store the cases)\n"
    )


def test_import_of_a_file_with_an_unknown_column_is_rejected_whole():
    result = run("import", "-", input="case_id,colour\nC1,blue\n")
    assert result.exit_code == 1
    assert result.stderr == "header: unknown column colour\nnothing written\n"


# ---- issue 16: a CLI that needs no coaxing -------------------------------------------------------

NO_AUTH: dict[str, str | None] = {  # none of the access-token settings: only `serve` needs them
    "IVCLMS_AUTH_DISABLED": None,
    "IVCLMS_AUTH_JWT_SECRET": None,
    "IVCLMS_AUTH_JWT_PUBLIC_KEY_FILE": None,
    "IVCLMS_DB_URL": None,
    "IVCLMS_FHIR_URL": None,
}


def cli(*args: str, data_dir: Path, input: str | None = None, **env: str):
    return CliRunner().invoke(
        main, list(args), input=input, env={**NO_AUTH, "IVCLMS_DATA_DIR": str(data_dir), **env}
    )


def test_commands_that_serve_no_http_need_no_auth_settings(tmp_path: Path):
    upgraded = cli("db", "upgrade", data_dir=tmp_path)
    assert upgraded.exit_code == 0, upgraded.output
    for args in (["config"], ["sync", "status"], ["export", "--out", str(tmp_path / "out")]):
        result = cli(*args, data_dir=tmp_path)
        assert result.exit_code == 0, (args, result.output)
        assert "authentication" not in result.output


def test_serve_still_requires_an_auth_setting(tmp_path: Path):
    result = cli("serve", data_dir=tmp_path)
    assert result.exit_code == 1
    assert "authentication is on by default: set IVCLMS_AUTH_JWT_SECRET" in result.stderr
    assert "Traceback" not in result.output


def test_a_relative_data_dir_is_resolved_once_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    result = cli("config", data_dir=Path("data"))
    assert result.exit_code == 0, result.output
    assert f"IVCLMS_DATA_DIR={tmp_path / 'data'}\n" in result.stdout
    assert f"# effective database: sqlite:///{tmp_path / 'data' / 'ivclms.sqlite3'}\n" in result.stdout


def test_the_default_data_dir_is_absolute_and_under_the_users_home(tmp_path: Path):
    env = {**NO_AUTH, "IVCLMS_DATA_DIR": None, "HOME": str(tmp_path)}
    result = CliRunner().invoke(main, ["config"], env=env)
    assert result.exit_code == 0, result.output
    assert f"IVCLMS_DATA_DIR={tmp_path / '.local/share/ivclms'}\n" in result.stdout


@pytest.mark.parametrize(
    "args", [["sync", "status"], ["export", "--out", "exported"], ["sync", "retry", "--all-dead"]]
)
def test_a_missing_database_is_one_line_naming_it_and_creates_nothing(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "elsewhere"
    result = cli(*args, data_dir=data)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: no database at {data / 'ivclms.sqlite3'}: run `ivclms db upgrade` to create it "
        "(or point IVCLMS_DATA_DIR or IVCLMS_DB_URL at the service's database)\n"
    )
    assert list(tmp_path.iterdir()) == []  # no data dir, no empty SQLite file, no export folder


def test_a_database_without_the_schema_says_to_upgrade(tmp_path: Path):
    (tmp_path / "ivclms.sqlite3").touch()
    result = cli("sync", "status", data_dir=tmp_path)
    assert result.exit_code == 1
    database = tmp_path / "ivclms.sqlite3"
    assert (
        result.stderr
        == f"Error: database sqlite:///{database} has no schema: run `ivclms db upgrade` first\n"
    )


def test_a_database_behind_the_code_says_to_upgrade(tmp_path: Path):
    from alembic.script import ScriptDirectory

    from service.db import make_engine
    from service.settings import Settings
    from service.store import migrate

    revisions = [r.revision for r in ScriptDirectory.from_config(migrate._config()).walk_revisions()]
    assert len(revisions) > 1, "needs at least two migrations to be behind"
    engine = make_engine(Settings(data_dir=tmp_path, auth_disabled=True))
    migrate.upgrade(engine, revisions[-1])  # the first migration only
    engine.dispose()
    result = cli("sync", "status", data_dir=tmp_path)
    assert result.exit_code == 1
    assert f"is at schema {revisions[-1]}, this version needs {revisions[0]}: run `ivclms db upgrade`" in (
        result.stderr
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_export_since_a_word_shows_the_accepted_format(tmp_path: Path):
    result = cli("export", "--since", "yesterday", "--out", str(tmp_path / "o"), data_dir=tmp_path)
    assert result.exit_code == 2
    assert "Invalid isoformat" not in result.stderr
    assert "Invalid value for --since: 'yesterday' is not an instant: give a date, time and time zone, " in (
        result.stderr
    )
    assert "like 2026-01-01T00:00:00Z" in result.stderr


def test_export_since_without_a_zone_says_so(tmp_path: Path):
    result = cli("export", "--since", "2026-01-01T00:00:00", "--out", str(tmp_path / "o"), data_dir=tmp_path)
    assert result.exit_code == 2
    assert "'2026-01-01T00:00:00' has no time zone" in result.stderr


def test_export_of_an_unknown_type_lists_the_valid_types(tmp_path: Path):
    from service.search import RESOURCE_TYPES

    result = cli("export", "--type", "Patient,Foo", "--out", str(tmp_path / "o"), data_dir=tmp_path)
    assert result.exit_code == 2
    assert f"Invalid value for --type: Foo cannot be exported; valid types: {', '.join(RESOURCE_TYPES)}" in (
        " ".join(result.stderr.split())  # click wraps long lines
    )


def _series(rows: int) -> str:
    lines = SERIES.read_text().splitlines(keepends=True)
    return "".join(lines[: rows + 1])


def test_import_counts_one_case_in_the_singular(tmp_path: Path):
    out = tmp_path / "bundles"
    result = run("import", "-", "--out", str(out), "--now", NOW, input=_series(1))
    assert result.exit_code == 0, result.output
    assert (
        result.stderr == f"1 case valid; 1 bundle written to {out} (not stored in the service's database)\n"
    )


def test_import_with_one_bad_row_says_nothing_was_written(tmp_path: Path):
    text = _series(2).replace("IVC-002", "IVC-001")  # the second row repeats the first case
    result = run("import", "-", "--out", str(tmp_path / "b"), "--now", NOW, input=text)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "line 3: case_id: IVC-001 is already the case of line 2",
        "1 row rejected, 1 case valid: nothing written (all or nothing)",
    ]
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(("separator", "name"), [(";", "semicolon"), ("\t", "tab")])
def test_import_of_a_file_with_another_separator_gets_a_hint(separator: str, name: str):
    text = _series(1).replace(",", separator)
    result = run("import", "-", input=text)
    assert result.exit_code == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith("header: unknown column case_id")
    assert first.endswith(
        f"(the file looks {name}-separated; columns must be separated by commas: save it as CSV with "
        "comma as the field separator)"
    )


def test_progress_is_drawn_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch):
    from service import cli as cli_module

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, drawn in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        with cli_module._progress(3, "checking") as bar:
            bar.update(3)
        assert ("checking" in stream.getvalue()) is drawn


def test_a_database_error_inside_a_command_is_one_line_without_sql(tmp_path: Path):
    """A database at the newest revision that lost a table (restored badly): the driver's error, which
    would quote the SQL, becomes one line naming its kind."""
    import sqlite3

    assert cli("db", "upgrade", data_dir=tmp_path).exit_code == 0
    with sqlite3.connect(tmp_path / "ivclms.sqlite3") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "outbox" in tables
        db.execute("DROP TABLE outbox")
    result = cli("sync", "status", data_dir=tmp_path)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: database failed: OperationalError (OperationalError); is it reachable and at the newest "
        "schema (`ivclms db upgrade`)?\n"
    )


def test_import_progress_counts_every_data_row_as_it_is_read():
    from service.case_files import import_rows

    told: list[int] = []
    report = import_rows(SERIES.read_text(), NOW, on_row=told.append)
    assert told == list(range(1, len(report.rows) + 1)) and len(told) == 9


def test_import_of_a_header_only_file_is_refused_as_over_http(tmp_path: Path):
    result = run("import", "-", "--out", str(tmp_path / "b"), input=_series(0))
    assert result.exit_code == 1
    assert result.stderr == "the file holds no data rows: nothing written\n"
    assert not (tmp_path / "b").exists()
