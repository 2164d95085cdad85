"""Issue 12, finding 8: every logged value is escaped, so a client's CR/LF cannot forge a log line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from service.logs import FORMAT, EscapingFormatter, escape, formatter
from service.settings import Settings, SettingsError
from tests.support.auth import auth_headers as _auth


def test_finding_8_escape_leaves_no_control_character():
    hostile = "a\r\nb\x00c\x1bd\x7fe\x85f\u2028g\\n"
    out = escape(hostile)
    assert out == "a\\r\\nb\\x00c\\x1bd\\x7fe\\x85f\\u2028g\\\\n"
    assert all(ord(ch) >= 0x20 and ch not in "\x7f\x85\u2028" for ch in out)
    assert escape("Tumour 6 cm, é") == "Tumour 6 cm, é"


@contextmanager
def _captured(shape: logging.Formatter) -> Iterator[io.StringIO]:
    """Every ``ivclms`` record at INFO and above, written by ``shape`` into the buffer yielded."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(shape)
    logger = logging.getLogger("ivclms")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_finding_8_a_path_with_crlf_cannot_produce_a_second_log_line(client):
    with _captured(EscapingFormatter(FORMAT)) as buffer:
        client.get("/fhir/Patient/x%0d%0a2026-01-01 00:00:00,000 INFO ivclms.access: forged", headers=_auth())
        client.open("/cases", method="GET\r\nforged", headers=_auth())
        logging.getLogger("ivclms.test").warning("value %s", "one\r\nforged\x00line")
    lines = buffer.getvalue().splitlines()
    assert lines, "nothing was logged: the check would be empty"
    assert not [line for line in lines if not line.startswith("20")], lines  # every line is a record
    assert any("GET\\r\\nFORGED None 405" in line for line in lines)  # the method, escaped on its own line
    assert "\x00" not in buffer.getvalue()
    assert any("one\\r\\nforged\\x00line" in line for line in lines)


def _json_lines(buffer: io.StringIO) -> list[dict]:
    lines = buffer.getvalue().splitlines()
    assert lines, "nothing was logged: the check would be empty"
    return [json.loads(line) for line in lines]  # every line is one whole JSON object


def test_json_format_one_object_per_record_even_with_crlf_and_a_traceback(client):
    """Issue 17 goal 7: "structured (JSON) logs as an option"."""
    with _captured(formatter("json")) as buffer:
        client.get("/fhir/Patient/x%0d%0a2026-01-01 00:00:00,000 INFO ivclms.access: forged", headers=_auth())
        logging.getLogger("ivclms.test").warning("value %s", "one\r\nforged\x00line")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("ivclms.test").exception("failed")
    records = _json_lines(buffer)
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records), records
    assert all(r["time"].endswith("+00:00") for r in records), records
    assert any(r["logger"] == "ivclms.access" for r in records), records
    warned = [r for r in records if r["message"] == "value one\r\nforged\x00line"]
    assert warned and warned[0]["level"] == "WARNING" and warned[0]["logger"] == "ivclms.test"
    failed = [r for r in records if r["message"] == "failed"]
    assert failed and "RuntimeError: boom" in failed[0]["exception"], failed


def test_text_format_is_the_default_and_an_unknown_format_is_refused():
    assert isinstance(formatter("text"), EscapingFormatter)
    assert Settings.from_env({"IVCLMS_AUTH_DISABLED": "true"}).log_format == "text"
    with pytest.raises(SettingsError, match="IVCLMS_LOG_FORMAT must be one of text, json"):
        Settings.from_env({"IVCLMS_AUTH_DISABLED": "true", "IVCLMS_LOG_FORMAT": "xml"})
