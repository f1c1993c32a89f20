"""Alembic environment: migrations run on the connection tunesmith hands over (jobs/db.py)."""
from alembic import context

from tunesmith.jobs.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=True)  # SQLite alters tables by copying them: batch mode does that
with context.begin_transaction():
    context.run_migrations()
