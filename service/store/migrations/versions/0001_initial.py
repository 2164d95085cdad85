"""Cases, their versions, the sync outbox, synced resources, idempotency keys and the audit trail.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from service.store.tables import BigId, UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.String(36), nullable=False, comment="uuid5 of the business key"),
        sa.Column("source_system", sa.String(512), nullable=False),
        sa.Column("case_id", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False, comment="current version; the ETag"),
        sa.Column("status", sa.String(32), nullable=False, comment="active | entered-in-error"),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
        sa.UniqueConstraint("source_system", "case_id", name="uq_cases_business_key"),
    )
    op.create_index("ix_cases_updated_at", "cases", ["updated_at"])
    op.create_table(
        "case_versions",
        sa.Column("case_ref", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False, comment="sha256 of the canonical case JSON"),
        sa.Column("case_json", sa.Text(), nullable=False),
        sa.Column("bundle_json", sa.Text(), nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["case_ref"], ["cases.id"], name="fk_case_versions_case_ref"),
        sa.PrimaryKeyConstraint("case_ref", "version", name="pk_case_versions"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("case_ref", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "state", sa.String(16), nullable=False, comment="pending | sending | done | dead | superseded"
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column(
            "lease_until", UtcDateTime(), nullable=True, comment="a 'sending' entry past this is reclaimed"
        ),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column(
            "last_error", sa.Text(), nullable=True, comment="no patient data: status and issue codes only"
        ),
        sa.Column(
            "outcome_json", sa.Text(), nullable=True, comment="the server's OperationOutcome of a failure"
        ),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("done_at", UtcDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_ref", "version"],
            ["case_versions.case_ref", "case_versions.version"],
            name="fk_outbox_case_ref",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_state_due", "outbox", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_case", "outbox", ["case_ref", "id"])
    op.create_table(
        "synced_resources",
        sa.Column("case_ref", sa.String(36), nullable=False),
        sa.Column("identifier", sa.String(512), nullable=False, comment="business identifier value"),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("server_id", sa.String(64), nullable=False),
        sa.Column("server_version", sa.String(64), nullable=True),
        sa.Column("case_version", sa.Integer(), nullable=False),
        sa.Column("synced_at", UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["case_ref"], ["cases.id"], name="fk_synced_resources_case_ref"),
        sa.PrimaryKeyConstraint("case_ref", "identifier", name="pk_synced_resources"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", sa.String(256), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("headers_json", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("principal", "key", name="pk_idempotency_keys"),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("recorded", UtcDateTime(), nullable=False),
        sa.Column("principal", sa.String(256), nullable=False),
        sa.Column("action", sa.String(1), nullable=False, comment="FHIR AuditEvent.action: C R U D E"),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column(
            "entity",
            sa.String(256),
            nullable=True,
            comment="Case/<id> or a resource type; never patient data",
        ),
        sa.Column("outcome", sa.String(2), nullable=False, comment="FHIR AuditEvent.outcome: 0 4 8 12"),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_recorded", "audit_events", ["recorded"])


def downgrade() -> None:
    for table in ("audit_events", "idempotency_keys", "synced_resources", "outbox", "case_versions", "cases"):
        op.drop_table(table)
