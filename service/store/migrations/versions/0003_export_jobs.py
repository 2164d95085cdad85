"""Bulk Data $export jobs.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.tables import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "export_jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column(
            "state", sa.String(16), nullable=False, comment="queued | running | done | failed | cancelled"
        ),
        sa.Column("level", sa.String(16), nullable=False, comment="system | patient"),
        sa.Column("types", sa.Text(), nullable=False, comment="comma-separated resource types"),
        sa.Column("since", UtcDateTime(), nullable=True),
        sa.Column("request_url", sa.Text(), nullable=False),
        sa.Column("principal", sa.String(256), nullable=False),
        sa.Column(
            "transaction_time", UtcDateTime(), nullable=False, comment="resources updated up to this instant"
        ),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.Column("progress", sa.Integer(), nullable=False, comment="resources written so far"),
        sa.Column("manifest_json", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_export_jobs"),
    )
    op.create_index("ix_export_jobs_state", "export_jobs", ["state", "created_at"])


def downgrade() -> None:
    op.drop_table("export_jobs")
