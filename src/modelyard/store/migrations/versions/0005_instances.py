"""instances: snapshots of the running instances (state, hardware, latest health)

Revision ID: 0005_instances
Revises: 0004_replicas
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_instances"
down_revision = "0004_replicas"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("replica", sa.String(length=32), nullable=False),
        sa.Column("version_pk", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("hardware", sa.String(length=50), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("health_status", sa.String(length=20), nullable=True),
        sa.Column("health_error", sa.Text(), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["version_pk"], ["versions.pk"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_instances_version_pk", "instances", ["version_pk"])
    op.create_index("ix_instances_deployment_id", "instances", ["deployment_id"])


def downgrade() -> None:
    op.drop_index("ix_instances_deployment_id", table_name="instances")
    op.drop_index("ix_instances_version_pk", table_name="instances")
    op.drop_table("instances")
