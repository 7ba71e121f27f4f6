"""Alembic environment: migrates the database named by the config or DATABASE_URL, one process at a time."""

from alembic import context

from operategpt.gateway.registry.db import make_engine
from operategpt.gateway.registry.models import Base
from operategpt.settings import Settings

# A fixed key so that managers started together (several gunicorn masters on one
# PostgreSQL) apply migrations one after the other instead of racing.
PG_MIGRATION_LOCK = 0x0FE7A7E


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})")
                context.configure(
                    connection=connection,
                    target_metadata=Base.metadata,
                    render_as_batch=connection.dialect.name == "sqlite",
                    compare_type=True,
                )
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `operategpt db upgrade`")
run_migrations_online()
