"""Tables of the pull from the hospital's FHIR server (``service.sync.pull``).

They are registered on ``service.store.tables.metadata`` (``tables`` imports this module at its end),
so Alembic and the migration test see them with every other table.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, PrimaryKeyConstraint, String, Table, Text, UniqueConstraint

from service.store.tables import BigId, UtcDateTime, metadata

pull_cursors = Table(
    "pull_cursors",
    metadata,
    Column("server_url", String(512), nullable=False, comment="base URL of the FHIR server pulled from"),
    Column("pulled_until", UtcDateTime, nullable=False, comment="start of the last successful pull"),
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("server_url"),
)

pulled_resources = Table(
    "pulled_resources",
    metadata,
    Column("server_url", String(512), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("server_id", String(64), nullable=False),
    Column("server_version", String(64), nullable=True, comment="meta.versionId that was merged"),
    Column("case_ref", String(36), nullable=False),
    Column("identifier", String(512), nullable=False, comment="business identifier it was merged as"),
    Column("case_version", Integer, nullable=False, comment="case version that holds it"),
    Column("pulled_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("server_url", "resource_type", "server_id"),
    Index("ix_pulled_resources_case", "case_ref"),
)

pull_conflicts = Table(
    "pull_conflicts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("server_url", String(512), nullable=False),
    Column("kind", String(16), nullable=False, comment="conflict | rejected"),
    Column("case_ref", String(36), nullable=True),
    Column("identifier", String(512), nullable=True, comment="business identifier of the element"),
    Column("resource_type", String(64), nullable=False),
    Column("server_id", String(64), nullable=False),
    Column("server_version", String(64), nullable=False, comment="meta.versionId on the server ('' if none)"),
    Column("case_version", Integer, nullable=True, comment="current case version when detected"),
    Column("reason", Text, nullable=False, comment="no patient data: versions, codes, element paths"),
    Column("resource_json", Text, nullable=False, comment="the server's resource as pulled"),
    Column("detected_at", UtcDateTime, nullable=False),
    Column("resolved_at", UtcDateTime, nullable=True),
    UniqueConstraint(
        "server_url", "resource_type", "server_id", "server_version", name="uq_pull_conflicts_resource"
    ),
    Index("ix_pull_conflicts_open", "resolved_at", "id"),
)
