"""The last day a resource's clinical date covers, so ``date`` searches compare ranges (R4 search.html):
an ongoing Period (a start, no end) is matched by ``ge`` a later day. Existing rows are filled from
their stored JSON.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import calendar
import json
from datetime import date
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Frozen here (a migration must not change when the application's code does); the same rules as
# service.store.resources.date_range at revision 0008.
_ELEMENTS = (
    "effectiveDateTime",
    "effectivePeriod",
    "performedDateTime",
    "performedPeriod",
    "onsetDateTime",
    "recordedDate",
    "period",
    "birthDate",
    "recorded",
)
_BATCH = 1000


def _last_day(value: str) -> str:
    try:
        if len(value) == 4:
            return date(int(value), 12, 31).isoformat()
        if len(value) == 7:
            year, month = int(value[:4]), int(value[5:7])
            return date(year, month, calendar.monthrange(year, month)[1]).isoformat()
    except ValueError:
        pass
    return value[:10]


def _range(resource: Any) -> tuple[str | None, str | None]:
    if not isinstance(resource, dict):
        return None, None
    for element in _ELEMENTS:
        value = resource.get(element)
        if isinstance(value, str) and value:
            return value, _last_day(value)
        if isinstance(value, dict):
            start, end = value.get("start"), value.get("end")
            start = start if isinstance(start, str) and start else None
            end = end if isinstance(end, str) and end else None
            if start is not None or end is not None:
                return start, _last_day(end) if end is not None else None
    return None, None


def upgrade() -> None:
    op.add_column(
        "resources",
        sa.Column(
            "date_end",
            sa.String(10),
            nullable=True,
            comment="last day the clinical date covers (YYYY-MM-DD); null with a date: an ongoing period",
        ),
    )
    table = sa.table(
        "resources",
        sa.column("resource_type", sa.String),
        sa.column("id", sa.String),
        sa.column("json", sa.Text),
        sa.column("date", sa.String),
        sa.column("date_end", sa.String),
    )
    conn = op.get_bind()
    after: tuple[str, str] = ("", "")
    while True:  # keyset batches: a large read side is never held in memory at once
        rows = conn.execute(
            sa.select(table.c.resource_type, table.c.id, table.c.json)
            .where(sa.tuple_(table.c.resource_type, table.c.id) > sa.tuple_(*after))
            .order_by(table.c.resource_type, table.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        for row in rows:
            start, end = _range(json.loads(row.json))
            if start is not None or end is not None:
                conn.execute(
                    sa.update(table)
                    .where(table.c.resource_type == row.resource_type, table.c.id == row.id)
                    .values(date=start, date_end=end)
                )
        after = (rows[-1].resource_type, rows[-1].id)


def downgrade() -> None:
    op.drop_column("resources", "date_end")
