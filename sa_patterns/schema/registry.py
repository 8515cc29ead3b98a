"""The per-``MetaData`` collection of database objects, and ``create_all``/``drop_all`` for it.

Patterns add objects with :func:`register`; ``create_all`` and the Alembic comparators read
them with :func:`registered`. Nothing is global: two metadatas never see each other's objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import DDL, MetaData, Table
from sqlalchemy.engine import Connection

from .objects import Entity

__all__ = [
    "NOT_A_TABLE",
    "create_all",
    "drop_all",
    "is_real_table",
    "provide",
    "register",
    "registered",
]

_KEY = "sa_patterns.entities"
_PROVIDERS = "sa_patterns.entity_providers"
#: ``Table.info`` flag for tables that only describe an object (a view) and must not be created.
NOT_A_TABLE = "sa_patterns.not_a_table"


def register(metadata: MetaData, *entities: Entity) -> None:
    """Add (or redefine, by key) database objects belonging to ``metadata``."""
    store: dict[tuple[str, ...], Entity] = metadata.info.setdefault(_KEY, {})
    for entity in entities:
        store[entity.key()] = entity


def provide(metadata: MetaData, name: str, provider: Callable[[MetaData], Iterable[Entity]]) -> None:
    """Objects derived from the whole of ``metadata`` (grants for every table, say), computed
    when read, so tables declared after the call are included. One provider per ``name``."""
    metadata.info.setdefault(_PROVIDERS, {})[name] = provider


def registered(metadata: MetaData) -> list[Entity]:
    """The objects of ``metadata`` in creation order (kind order, then registration order)."""
    store: dict[tuple[str, ...], Entity] = dict(metadata.info.get(_KEY, {}))
    for provider in metadata.info.get(_PROVIDERS, {}).values():
        for entity in provider(metadata):
            store.setdefault(entity.key(), entity)  # a registered object wins
    return sorted(store.values(), key=lambda e: e.order)


def is_real_table(table: Table) -> bool:
    return not table.info.get(NOT_A_TABLE, False)


def _execute(connection: Connection, statements: Iterable[str]) -> None:
    for statement in statements:
        # DDL %-formats its text: a literal "%" is passed doubled
        connection.execute(DDL(statement.replace("%", "%%")))  # type: ignore[no-untyped-call]


def create_all(connection: Connection, metadata: MetaData) -> None:
    """``metadata.create_all`` plus the registered objects, each in its place in the order.

    Like ``metadata.create_all`` it skips what exists, so a second call is a no-op and a call on
    a partly built schema completes it; it does not alter an object that differs. Handy for
    tests and scripts; applications use migrations (``alembic revision --autogenerate``), which
    emit the same statements and bring changed objects up to date.
    """
    from .catalog import read_catalog  # the catalog reads every kind: imported when used

    tables = [t for t in metadata.sorted_tables if is_real_table(t)]
    entities = registered(metadata)
    schemas = {None, *(t.schema for t in tables), *(getattr(e, "schema", None) for e in entities)}
    existing = read_catalog(connection, tables, schemas)
    missing = [e for e in entities if e.key() not in existing]
    for entity in missing:
        if entity.order <= 0:
            _execute(connection, entity.create_statements())
    metadata.create_all(connection, tables=tables)
    for entity in missing:
        if entity.order > 0:
            _execute(connection, entity.create_statements())


def drop_all(connection: Connection, metadata: MetaData) -> None:
    """The reverse of :func:`create_all`."""
    entities = registered(metadata)
    for entity in reversed(entities):
        if entity.order > 0:
            _execute(connection, entity.drop_sql())
    metadata.drop_all(connection, tables=[t for t in metadata.sorted_tables if is_real_table(t)])
    for entity in reversed(entities):
        if entity.order <= 0:
            _execute(connection, entity.drop_sql())
