"""workers.last_error_at and last_error_source: the last failure keeps its time and says who saw it

A passing probe no longer wipes a failure that real requests saw (the worker may still be cooling down);
`last_error_source` is `probe` or `request`. Existing errors get no time or source (unknown).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_error_source", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("last_error_source")
        batch.drop_column("last_error_at")
