"""Alembic environment: runs on the connection that ``AuditStore`` hands over in ``config.attributes``.

Deliberately no ``fileConfig``: the application owns logging configuration, not the migrations.
"""

from alembic import context

from efface.audit.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("efface migrations run only through AuditStore, which passes a connection")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
