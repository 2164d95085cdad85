"""Pull from the hospital's FHIR server: cursors, merged resources, conflicts.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.tables import BigId, UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pull_cursors",
        sa.Column(
            "server_url", sa.String(512), nullable=False, comment="base URL of the FHIR server pulled from"
        ),
        sa.Column("pulled_until", UtcDateTime(), nullable=False, comment="start of the last successful pull"),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("server_url", name="pk_pull_cursors"),
    )
    op.create_table(
        "pulled_resources",
        sa.Column("server_url", sa.String(512), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("server_id", sa.String(64), nullable=False),
        sa.Column("server_version", sa.String(64), nullable=True, comment="meta.versionId that was merged"),
        sa.Column("case_ref", sa.String(36), nullable=False),
        sa.Column(
            "identifier", sa.String(512), nullable=False, comment="business identifier it was merged as"
        ),
        sa.Column("case_version", sa.Integer(), nullable=False, comment="case version that holds it"),
        sa.Column("pulled_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("server_url", "resource_type", "server_id", name="pk_pulled_resources"),
    )
    op.create_index("ix_pulled_resources_case", "pulled_resources", ["case_ref"])
    op.create_table(
        "pull_conflicts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("server_url", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, comment="conflict | rejected"),
        sa.Column("case_ref", sa.String(36), nullable=True),
        sa.Column("identifier", sa.String(512), nullable=True, comment="business identifier of the element"),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("server_id", sa.String(64), nullable=False),
        sa.Column(
            "server_version",
            sa.String(64),
            nullable=False,
            comment="meta.versionId on the server ('' if none)",
        ),
        sa.Column("case_version", sa.Integer(), nullable=True, comment="current case version when detected"),
        sa.Column(
            "reason", sa.Text(), nullable=False, comment="no patient data: versions, codes, element paths"
        ),
        sa.Column("resource_json", sa.Text(), nullable=False, comment="the server's resource as pulled"),
        sa.Column("detected_at", UtcDateTime(), nullable=False),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pull_conflicts"),
        sa.UniqueConstraint(
            "server_url", "resource_type", "server_id", "server_version", name="uq_pull_conflicts_resource"
        ),
    )
    op.create_index("ix_pull_conflicts_open", "pull_conflicts", ["resolved_at", "id"])


def downgrade() -> None:
    op.drop_table("pull_conflicts")
    op.drop_table("pulled_resources")
    op.drop_table("pull_cursors")
