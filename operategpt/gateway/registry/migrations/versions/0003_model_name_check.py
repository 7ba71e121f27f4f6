"""Model names now match a character set (letters, digits, `._:/@+-`): report existing rows that do not

Nothing is changed: renaming a model would break its clients, and deleting a worker would lose it. The
operator is told which rows to fix (offline and register again under a valid name); until then they are
still served, but can no longer be registered, taken offline or asked for by name through the API.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import logging
import re

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

_VALID = re.compile(r"[A-Za-z0-9._:/@+-]{1,128}")


def upgrade() -> None:
    rows = op.get_bind().execute(sa.text("SELECT id, model_name FROM workers ORDER BY id")).all()
    bad = [(row_id, name) for row_id, name in rows if not _VALID.fullmatch(name or "")]
    if bad:
        listed = ", ".join(f"id {row_id}: {name!r}" for row_id, name in bad)
        log.warning(
            "%d worker(s) have a model name outside letters, digits and ._:/@+- (left unchanged; "
            "offline them and register again under a valid name): %s", len(bad), listed,
        )


def downgrade() -> None:
    pass
