"""initial registry: workers, registry_version, leases

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("req_url_template", sa.String(2048), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("req_type", sa.String(8), nullable=False),
        sa.Column("body", sa.JSON(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("response_extract", sa.String(1024), nullable=False),
        sa.Column("api_format", sa.String(16), nullable=False),
        sa.Column("upstream_model", sa.String(128), nullable=True),
        sa.Column("model_type", sa.String(32), nullable=False),
        sa.Column("health_url", sa.String(2048), nullable=True),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_latency_ms", sa.Float(), nullable=True),
        sa.Column("passive_failures", sa.Integer(), nullable=False),
        sa.Column("cooldown_until", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("model_name", "req_url_template", name="uq_workers_model_url"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_workers_model_name", "workers", ["model_name"])
    op.create_table(
        "registry_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.bulk_insert(sa.table("registry_version", sa.column("id"), sa.column("version")), [{"id": 1, "version": 0}])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("registry_version")
    op.drop_index("ix_workers_model_name", table_name="workers")
    op.drop_table("workers")
