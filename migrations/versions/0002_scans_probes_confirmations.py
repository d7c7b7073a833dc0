"""scans probes confirmations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 13:52:03.020542
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("next_run", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_started", sa.Float(), nullable=True),
        sa.Column("last_finished", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_jobs")),
    )
    op.create_table(
        "mirror_file_confirmations",
        sa.Column("mirror_id", sa.Integer(), nullable=False),
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("checked_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["origin_files.id"],
            name=op.f("fk_mirror_file_confirmations_file_id_origin_files"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["mirror_id"],
            ["mirrors.id"],
            name=op.f("fk_mirror_file_confirmations_mirror_id_mirrors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("mirror_id", "file_id", name=op.f("pk_mirror_file_confirmations")),
    )
    op.create_table(
        "mirror_scans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mirror_id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("files_seen", sa.Integer(), nullable=False),
        sa.Column("files_matching", sa.Integer(), nullable=False),
        sa.Column("missing", sa.Integer(), nullable=False),
        sa.Column("outdated", sa.Integer(), nullable=False),
        sa.Column("extra", sa.Integer(), nullable=False),
        sa.Column("tz_offset", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mirror_id"],
            ["mirrors.id"],
            name=op.f("fk_mirror_scans_mirror_id_mirrors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mirror_scans")),
    )
    with op.batch_alter_table("mirror_scans", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mirror_scans_mirror_started", ["mirror_id", "started_at"], unique=False
        )

    op.create_table(
        "probe_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mirror_id", sa.Integer(), nullable=False),
        sa.Column("scheme", sa.String(length=8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.String(length=256), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mirror_id"],
            ["mirrors.id"],
            name=op.f("fk_probe_results_mirror_id_mirrors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_results")),
    )
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.create_index("ix_probe_results_mirror_at", ["mirror_id", "at"], unique=False)

    with op.batch_alter_table("mirror_state", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scan_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("tz_offset", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("probe_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("probe_successes", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("scheme_health", sa.Text(), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("last_probe_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("last_probe_error", sa.String(length=256), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("trace_time", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("trace_checked_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("mirror_state", schema=None) as batch_op:
        batch_op.drop_column("trace_checked_at")
        batch_op.drop_column("trace_time")
        batch_op.drop_column("last_probe_error")
        batch_op.drop_column("last_probe_at")
        batch_op.drop_column("scheme_health")
        batch_op.drop_column("probe_successes")
        batch_op.drop_column("probe_failures")
        batch_op.drop_column("tz_offset")
        batch_op.drop_column("scan_failures")

    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.drop_index("ix_probe_results_mirror_at")

    op.drop_table("probe_results")
    with op.batch_alter_table("mirror_scans", schema=None) as batch_op:
        batch_op.drop_index("ix_mirror_scans_mirror_started")

    op.drop_table("mirror_scans")
    op.drop_table("mirror_file_confirmations")
    op.drop_table("jobs")
