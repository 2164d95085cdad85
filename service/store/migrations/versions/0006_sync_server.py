"""Sync records name the FHIR server: outbox entries and synced resources are per server.

A hospital that moves to another FHIR server must get every case there, so "delivered" has to mean
"delivered to this server" (``service/sync/backfill.py``). Rows written before this revision do not
say which server they were for: outbox entries keep NULL and synced resources get '' until the first
backfill attributes them to the server configured then (``backfill.adopt_legacy``).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OUTBOX_COMMENT = (
    "FHIR server the entry is for, set when a worker claims it; NULL: queued by intake, "
    "for whichever server is configured when it is sent"
)


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("server_url", sa.String(512), nullable=True, comment=OUTBOX_COMMENT))
    with op.batch_alter_table("synced_resources") as batch:
        batch.add_column(
            sa.Column(
                "server_url",
                sa.String(512),
                nullable=False,
                server_default="",
                comment="base URL of the FHIR server it was sent to",
            )
        )
        batch.drop_constraint("pk_synced_resources", type_="primary")
        batch.create_primary_key("pk_synced_resources", ["server_url", "case_ref", "identifier"])
    with op.batch_alter_table("synced_resources") as batch:
        batch.alter_column("server_url", server_default=None, existing_type=sa.String(512))


def downgrade() -> None:
    op.execute("DELETE FROM synced_resources WHERE server_url <> ''")
    with op.batch_alter_table("synced_resources") as batch:
        batch.drop_constraint("pk_synced_resources", type_="primary")
        batch.create_primary_key("pk_synced_resources", ["case_ref", "identifier"])
        batch.drop_column("server_url")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("server_url")
