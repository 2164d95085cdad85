"""The FHIR read side: current resources with search columns, their versions, tokens and links.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.tables import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False, comment="uuid of the resource's urn:uuid full URL"),
        sa.Column("version_id", sa.Integer(), nullable=False, comment="bumped only when the content changes"),
        sa.Column("case_ref", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=True, comment="the case's Patient resource id"),
        sa.Column("last_updated", UtcDateTime(), nullable=False),
        sa.Column(
            "deleted", sa.Integer(), nullable=False, comment="1: left the case (410 Gone), kept in history"
        ),
        sa.Column("profile", sa.String(256), nullable=True),
        sa.Column("identifier", sa.String(1024), nullable=True, comment="business identifier value"),
        sa.Column(
            "date", sa.String(32), nullable=True, comment="the resource's clinical date (search `date`)"
        ),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["case_ref"], ["cases.id"], name="fk_resources_case_ref"),
        sa.PrimaryKeyConstraint("resource_type", "id", name="pk_resources"),
    )
    op.create_index("ix_resources_updated", "resources", ["resource_type", "last_updated", "id"])
    op.create_index("ix_resources_patient", "resources", ["patient_id"])
    op.create_index("ix_resources_case", "resources", ["case_ref"])
    op.create_index("ix_resources_identifier", "resources", ["identifier"])
    op.create_table(
        "resource_versions",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", UtcDateTime(), nullable=False),
        sa.Column("deleted", sa.Integer(), nullable=False),
        sa.Column("json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("resource_type", "id", "version_id", name="pk_resource_versions"),
    )
    op.create_table(
        "resource_links",
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column(
            "param", sa.String(64), nullable=False, comment="search parameter: code, subject, part-of, ..."
        ),
        sa.Column(
            "system",
            sa.String(512),
            nullable=False,
            comment="token system, or the target type of a reference",
        ),
        sa.Column(
            "value", sa.String(1024), nullable=False, comment="token code, or the target id of a reference"
        ),
    )
    op.create_index("ix_resource_links_lookup", "resource_links", ["param", "value", "system"])
    op.create_index("ix_resource_links_owner", "resource_links", ["resource_type", "id"])


def downgrade() -> None:
    for table in ("resource_links", "resource_versions", "resources"):
        op.drop_table(table)
