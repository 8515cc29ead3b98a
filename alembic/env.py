"""Alembic environment wired for sa_patterns (written by `sa-patterns init`)."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

import sa_patterns.alembic
from sa_patterns.alembic.environment import database_url, target_metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

metadata = target_metadata(config)


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(config),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        compare_server_default=True,
        transaction_per_migration=True,
        **sa_patterns.alembic.configure_kwargs(),
    )
    # lock_timeout (sa_patterns.lock_timeout in alembic.ini), a revision retried when it times out
    sa_patterns.alembic.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_server_default=True,
        transaction_per_migration=True,
        **sa_patterns.alembic.configure_kwargs(),
    )
    # lock_timeout (sa_patterns.lock_timeout in alembic.ini), a revision retried when it times out
    sa_patterns.alembic.run_migrations()


def run_migrations_online() -> None:
    # A connection handed over by a program (tests, `sa-patterns demo`) wins over the URL.
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    engine = create_engine(database_url(config), poolclass=pool.NullPool)
    with engine.connect() as conn:
        do_run_migrations(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
