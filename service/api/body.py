"""Request bodies: content type checked, size bounded (Flask's MAX_CONTENT_LENGTH), JSON parsed strictly."""

from __future__ import annotations

from typing import Any

import orjson
from flask import request

from service.errors import BadRequest, Issue, UnsupportedMediaType

CASE_JSON = ("application/json",)
FHIR_JSON_TYPES = ("application/fhir+json", "application/json")
CSV_TYPES = ("text/csv",)


def _require_type(accepted: tuple[str, ...]) -> None:
    if request.mimetype not in accepted:
        got = request.mimetype or "none"
        raise UnsupportedMediaType(f"Content-Type must be {' or '.join(accepted)} (got {got})")


def raw_body(accepted: tuple[str, ...]) -> bytes:
    _require_type(accepted)
    data = request.get_data(cache=False)
    if not data:
        raise BadRequest([Issue("required", "the request body is empty")])
    return data


def json_body(accepted: tuple[str, ...]) -> Any:
    """Parsed JSON; NaN/Infinity and invalid UTF-8 are malformed (400), never a 500 later."""
    data = raw_body(accepted)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise BadRequest(
            [Issue("invalid", f"the body is not valid JSON: {error.msg} (position {error.pos})")]
        ) from None


def text_body(accepted: tuple[str, ...]) -> str:
    data = raw_body(accepted)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest([Issue("invalid", f"the body is not UTF-8 (byte {error.start})")]) from None
