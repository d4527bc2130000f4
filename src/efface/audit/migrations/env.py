"""Alembic environment: runs on the connection that ``AuditStore`` hands over in ``config.attributes``.

Deliberately no ``fileConfig``: the application owns logging configuration, not the migrations. And no
``target_metadata``: it serves only ``--autogenerate``, which cannot run here (there is no connection outside
``AuditStore``), and importing the live tables would tie the runner to today's code. Revisions are written by
hand and import nothing from efface; a test compares the migrated schema with ``efface.audit.tables``.
"""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("efface migrations run only through AuditStore, which passes a connection")

# No render_as_batch either (it too only shapes --autogenerate output): a revision that alters a column
# SQLite cannot ALTER uses op.batch_alter_table itself.
context.configure(connection=connection)
with context.begin_transaction():
    context.run_migrations()
