"""FHIR JSON responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from flask import Response

from service.fhir.client import FHIR_JSON


def fhir_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=dict(headers or {}), content_type=FHIR_JSON)
