"""index change log; differences readable by file from their index alone

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "index_changes",
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("file_ids", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_index_changes")),
    )
    # A full index build reads the differences grouped by file: with mirror and kind in the
    # index, that is an index-only scan instead of a table lookup per row.
    with op.batch_alter_table("mirror_file_diffs") as batch_op:
        batch_op.drop_index("ix_mirror_file_diffs_file_id")
        batch_op.create_index(
            "ix_mirror_file_diffs_file_id", ["file_id", "mirror_id", "kind"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("mirror_file_diffs") as batch_op:
        batch_op.drop_index("ix_mirror_file_diffs_file_id")
        batch_op.create_index("ix_mirror_file_diffs_file_id", ["file_id"], unique=False)
    op.drop_table("index_changes")
