"""job leases (generation, expiry, attempts and their errors) and API key roles

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 08:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('lease_generation', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('lease_expires_at', sa.Float(), nullable=True))
        batch.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('attempt_errors', sa.JSON(), nullable=True))
    with op.batch_alter_table('api_keys') as batch:
        # Keys made before roles existed could do everything: they stay admin.
        batch.add_column(sa.Column('role', sa.String(length=16), nullable=False, server_default='admin'))
    with op.batch_alter_table('files') as batch:
        batch.add_column(sa.Column('owner', sa.String(length=32), nullable=True))  # the key that uploaded it


def downgrade() -> None:
    with op.batch_alter_table('files') as batch:
        batch.drop_column('owner')
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('role')
    with op.batch_alter_table('jobs') as batch:
        for column in ('attempt_errors', 'attempts', 'lease_expires_at', 'lease_generation'):
            batch.drop_column(column)
