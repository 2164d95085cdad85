"""What an export job honours of the Bulk Data v2 kick-off parameters (_typeFilter, _elements, patient,
Group) and the warnings about those it ignored.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "export_jobs",
        sa.Column(
            "options_json",
            sa.Text(),
            nullable=True,
            comment="Bulk Data v2 parameters honoured (_typeFilter, _elements, patient, Group), warnings",
        ),
    )


def downgrade() -> None:
    op.drop_column("export_jobs", "options_json")
