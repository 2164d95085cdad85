"""FHIR R4 ``dateTime`` and ``Period`` values -> the case's dates (issue 15, outside review).

The case holds dates (``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``); FHIR writes a date as ``dateTime``, which
may carry a time ("YYYY-MM-DDThh:mm:ss+zz:zz"; R4 datatypes: "If hours and minutes are specified, a
time zone SHALL be populated"), and ``performed[x]``/``effective[x]`` may be a ``Period``. Both were
refused. Reading them:

- a ``dateTime`` with a time is its calendar date *as written*, the date in the value's own offset:
  ``2021-04-12T23:30:00-05:00`` is ``2021-04-12``, never converted to UTC (which would make it the
  13th, a day the source never wrote). The time is not kept: the case format has no place for it.
- a ``Period`` is its ``start`` (read the same way); without a start the element gives no date
  (R4: "If the low element is missing, the meaning is that the low boundary is not known"), and a
  date the case requires is refused naming ``performedPeriod.start``, not written ``unknown``: the end
  the client did send would be lost, and a surgery of unknown date places no result. A client whose
  date is not known says so with data-absent-reason (issue 15, second outside review, L2).
- anything else is passed on unchanged, so the case validator names it (a time without a zone is not
  a valid R4 ``dateTime``).
"""

from __future__ import annotations

import re
from typing import Any

from service.mapping import paths

_TIMED = re.compile(
    r"(\d{4}-\d{2}-\d{2})T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]((0\d|1[0-3]):[0-5]\d|14:00))"
)
_SUFFIX = "DateTime"


def case_date(value: Any) -> Any:
    """The case date of a FHIR ``date``/``dateTime`` value: a timed one's date as written, else as is."""
    if isinstance(value, str) and (m := _TIMED.fullmatch(value)):
        return m.group(1)
    return value


def read_date(node: dict[str, Any], path: str) -> tuple[Any, str]:
    """The case date at ``path`` (``performedDateTime``) and the element it came from: the value, or,
    when absent, the start of the ``Period`` choice of the same element (``performedPeriod.start``)."""
    value = paths.get(node, path)
    if value is None and path.endswith(_SUFFIX):
        period = paths.get(node, path[: -len(_SUFFIX)] + "Period")
        if isinstance(period, dict):  # without a start: no date, but the element where it is missing
            return case_date(period.get("start")), path[: -len(_SUFFIX)] + "Period.start"
    return case_date(value), path
