"""What an export job may contain: the caller's grant per type (SMART v2 restrictions, source systems).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "export_jobs",
        sa.Column(
            "access_json",
            sa.Text(),
            nullable=True,
            comment="per type: the caller's restrictions and source systems (JSON); null: unlimited",
        ),
    )


def downgrade() -> None:
    op.drop_column("export_jobs", "access_json")
