"""The database schema (SQLAlchemy Core); Alembic migrations in ``migrations/`` create it.

Case content is stored as JSON text exactly as mapped, so any past version can be shown and re-sent
byte for byte; the columns beside it are what queries filter on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect

# Autoincrement keys: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ix": "ix_%(table_name)s_%(column_0_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out, whatever the backend keeps (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        result: datetime = value
        return result.replace(tzinfo=UTC) if result.tzinfo is None else result.astimezone(UTC)


cases = Table(
    "cases",
    metadata,
    Column("id", String(36), primary_key=True, comment="uuid5 of the business key"),
    Column("source_system", String(512), nullable=False),
    Column("case_id", String(128), nullable=False),
    Column("version", Integer, nullable=False, comment="current version; the ETag"),
    Column("status", String(32), nullable=False, comment="active | entered-in-error"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("source_system", "case_id", name="uq_cases_business_key"),
    Index("ix_cases_updated_at", "updated_at"),
)

case_versions = Table(
    "case_versions",
    metadata,
    Column("case_ref", String(36), ForeignKey("cases.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(32), nullable=False),
    Column("content_hash", String(64), nullable=False, comment="sha256 of the canonical case JSON"),
    Column("case_json", Text, nullable=False),
    Column("bundle_json", Text, nullable=False),
    Column("author", String(256), nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("case_ref", "version"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("case_ref", String(36), nullable=False),
    Column("version", Integer, nullable=False),
    Column("state", String(16), nullable=False, comment="pending | sending | done | dead | superseded"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("lease_until", UtcDateTime, nullable=True, comment="a 'sending' entry past this is reclaimed"),
    Column("claimed_by", String(128), nullable=True),
    Column("last_error", Text, nullable=True, comment="no patient data: status and issue codes only"),
    Column("outcome_json", Text, nullable=True, comment="the server's OperationOutcome of a failure"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("done_at", UtcDateTime, nullable=True),
    Column(
        "server_url",
        String(512),
        nullable=True,
        comment="FHIR server the entry is for, set when a worker claims it; NULL: queued by intake, "
        "for whichever server is configured when it is sent",
    ),
    ForeignKeyConstraint(["case_ref", "version"], ["case_versions.case_ref", "case_versions.version"]),
    Index("ix_outbox_state_due", "state", "next_attempt_at"),
    Index("ix_outbox_case", "case_ref", "id"),
)

synced_resources = Table(
    "synced_resources",
    metadata,
    Column("server_url", String(512), nullable=False, comment="base URL of the FHIR server it was sent to"),
    Column("case_ref", String(36), ForeignKey("cases.id"), nullable=False),
    Column("identifier", String(512), nullable=False, comment="business identifier value"),
    Column("resource_type", String(64), nullable=False),
    Column("server_id", String(64), nullable=False),
    Column("server_version", String(64), nullable=True),
    Column("case_version", Integer, nullable=False),
    Column("synced_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("server_url", "case_ref", "identifier"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("principal", String(256), nullable=False),
    Column("key", String(256), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=False),
    Column("headers_json", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("principal", "key"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("recorded", UtcDateTime, nullable=False),
    Column("principal", String(256), nullable=False),
    Column("action", String(1), nullable=False, comment="FHIR AuditEvent.action: C R U D E"),
    Column("operation", String(64), nullable=False),
    Column("entity", String(256), nullable=True, comment="Case/<id> or a resource type; never patient data"),
    Column("outcome", String(2), nullable=False, comment="FHIR AuditEvent.outcome: 0 4 8 12"),
    Column("status", Integer, nullable=False),
    Index("ix_audit_events_recorded", "recorded"),
)

# -- the FHIR read side: every resource of every case's current version, searchable ----------------

resources = Table(
    "resources",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False, comment="uuid of the resource's urn:uuid full URL"),
    Column("version_id", Integer, nullable=False, comment="bumped only when the content changes"),
    Column("case_ref", String(36), ForeignKey("cases.id"), nullable=False),
    Column("patient_id", String(64), nullable=True, comment="the case's Patient resource id"),
    Column("last_updated", UtcDateTime, nullable=False),
    Column("deleted", Integer, nullable=False, comment="1: left the case (410 Gone), kept in history"),
    Column("profile", String(256), nullable=True),
    Column("identifier", String(1024), nullable=True, comment="business identifier value"),
    Column("date", String(32), nullable=True, comment="the resource's clinical date (search `date`)"),
    Column(
        "date_end",
        String(10),
        nullable=True,
        comment="last day the clinical date covers (YYYY-MM-DD); null with a date: an ongoing period",
    ),
    Column("content_hash", String(64), nullable=False),
    Column("json", Text, nullable=False),
    PrimaryKeyConstraint("resource_type", "id"),
    Index("ix_resources_updated", "resource_type", "last_updated", "id"),  # search and export keyset order
    Index("ix_resources_patient", "patient_id"),
    Index("ix_resources_case", "case_ref"),
    Index("ix_resources_identifier", "identifier"),
)

resource_versions = Table(
    "resource_versions",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", UtcDateTime, nullable=False),
    Column("deleted", Integer, nullable=False),
    Column("json", Text, nullable=False),
    PrimaryKeyConstraint("resource_type", "id", "version_id"),
)

resource_links = Table(
    "resource_links",
    metadata,
    Column("resource_type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("param", String(64), nullable=False, comment="search parameter: code, subject, part-of, ..."),
    Column("system", String(512), nullable=False, comment="token system, or the target type of a reference"),
    Column("value", String(1024), nullable=False, comment="token code, or the target id of a reference"),
    Index("ix_resource_links_lookup", "param", "value", "system"),
    Index("ix_resource_links_owner", "resource_type", "id"),
)

# -- Bulk Data $export jobs (run by the worker, files under <DATA_DIR>/exports/<id>/) ---------------

export_jobs = Table(
    "export_jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("state", String(16), nullable=False, comment="queued | running | done | failed | cancelled"),
    Column("level", String(16), nullable=False, comment="system | patient"),
    Column("types", Text, nullable=False, comment="comma-separated resource types"),
    Column("since", UtcDateTime, nullable=True),
    Column("request_url", Text, nullable=False),
    Column("principal", String(256), nullable=False),
    Column("transaction_time", UtcDateTime, nullable=False, comment="resources updated up to this instant"),
    Column("created_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime, nullable=True),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("progress", Integer, nullable=False, comment="resources written so far"),
    Column("manifest_json", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column(
        "access_json",
        Text,
        nullable=True,
        comment="per type: the caller's restrictions and source systems (JSON); null: unlimited",
    ),
    Column(
        "options_json",
        Text,
        nullable=True,
        comment="Bulk Data v2 parameters honoured (_typeFilter, _elements, patient, Group), warnings",
    ),
    Index("ix_export_jobs_state", "state", "created_at"),
)

from service.store import pull_tables as pull_tables  # noqa: E402  (registers the pull tables on metadata)
