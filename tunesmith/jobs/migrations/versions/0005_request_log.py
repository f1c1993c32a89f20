"""request log (monitoring) and feedback on a request: its id, a corrected label

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 10:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('requests',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('request', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('model', sa.String(length=255), nullable=False),
    sa.Column('endpoint', sa.String(length=32), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('prompt_tokens', sa.Integer(), nullable=True),
    sa.Column('completion_tokens', sa.Integer(), nullable=True),
    sa.Column('input', sa.Text(), nullable=True),
    sa.Column('output', sa.Text(), nullable=True),
    sa.Column('label', sa.String(length=255), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_requests_request', 'requests', ['request'])
    op.create_index('ix_requests_created_at', 'requests', ['created_at'])
    op.create_index('ix_requests_model', 'requests', ['model'])
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('label', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_feedback_request_id', ['request_id'])


def downgrade() -> None:
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_index('ix_feedback_request_id')
        batch_op.drop_column('label')
        batch_op.drop_column('request_id')
    op.drop_index('ix_requests_model', table_name='requests')
    op.drop_index('ix_requests_created_at', table_name='requests')
    op.drop_index('ix_requests_request', table_name='requests')
    op.drop_table('requests')
