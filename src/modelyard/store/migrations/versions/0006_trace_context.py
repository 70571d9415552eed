"""predictions.trace_context: the caller's W3C traceparent/tracestate

Revision ID: 0006_trace_context
Revises: 0005_instances
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_trace_context"
down_revision = "0005_instances"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding it rewrites nothing on SQLite or PostgreSQL.
    op.add_column("predictions", sa.Column("trace_context", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:  # SQLite drops a column by a copy
        batch.drop_column("trace_context")
