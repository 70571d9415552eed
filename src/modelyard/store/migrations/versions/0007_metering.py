"""metering: the usage ledger by phase with prices and costs, predictions' cost, accounts'
monthly spend limits, releases' idle timeout and models' per-output pricing

Revision ID: 0007_metering
Revises: 0006_trace_context
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_metering"
down_revision = "0006_trace_context"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nothing wrote the old `usage` table (a placeholder since 0001): it is made again.
    with op.batch_alter_table("usage", schema=None) as batch:
        batch.drop_index(batch.f("ix_usage_prediction_id"))
    op.drop_table("usage")
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=120), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.String(length=32), nullable=True),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("hardware", sa.String(length=50), nullable=False),
        sa.Column("phase", sa.String(length=10), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("quantity", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=20), nullable=False),
        sa.Column("unit_price_nanos", sa.BigInteger(), nullable=False),
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False),
        sa.Column("billed", sa.Boolean(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_usage_prediction_id", "usage", ["prediction_id"])
    op.create_index("ix_usage_day", "usage", ["day"])
    op.create_index("ix_usage_account_day", "usage", ["account_id", "day"])
    op.add_column("predictions", sa.Column("cost_nanos", sa.BigInteger(), nullable=True))
    op.add_column("accounts", sa.Column("spend_limit_nanos", sa.BigInteger(), nullable=True))
    op.add_column("accounts", sa.Column("spend_notified_month", sa.String(7), nullable=True))
    op.add_column("releases", sa.Column("idle_timeout", sa.Float(), nullable=True))
    op.add_column("models", sa.Column("pricing", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("pricing")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("idle_timeout")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("spend_notified_month")
        batch.drop_column("spend_limit_nanos")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("cost_nanos")
    op.drop_index("ix_usage_account_day", "usage")
    op.drop_index("ix_usage_day", "usage")
    op.drop_index("ix_usage_prediction_id", "usage")
    op.drop_table("usage")
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.String(length=32), nullable=False),
        sa.Column("hardware", sa.String(length=50), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_usage_prediction_id", "usage", ["prediction_id"])
