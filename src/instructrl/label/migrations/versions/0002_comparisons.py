"""Comparison tasks for evaluations: which model wrote which side of each blind pairwise comparison.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "comparison_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False, unique=True),
        sa.Column("batch", sa.String(64), nullable=False, index=True),
        sa.Column("prompt_index", sa.Integer, nullable=False),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("baseline", sa.String(128), nullable=True),
        sa.Column("model_position", sa.Integer, nullable=False),
        sa.Column("check_answer", sa.String(8), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("comparison_items")
