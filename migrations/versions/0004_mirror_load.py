"""mirror load estimates shared by dispatchers

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mirror_load",
        sa.Column("process", sa.String(length=128), nullable=False),
        sa.Column("mirror", sa.String(length=64), nullable=False),
        sa.Column("mbps", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("process", "mirror", name=op.f("pk_mirror_load")),
    )


def downgrade() -> None:
    op.drop_table("mirror_load")
