"""Read our objects back from the live catalog, and diff them against the models.

Stamped objects (functions, triggers, policies, views, materialized views, extensions we
created) are rebuilt from their ``sa_patterns:`` comment. Row-level security state is read from
``pg_class`` for the tables the models know. Every query binds its parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Table, text
from sqlalchemy.engine import Connection

from . import access, constraints  # noqa: F401  (register the kinds read from the catalog)
from .objects import COMMENT_PREFIX, Entity, Extension, entity_from_spec, live_kinds

__all__ = ["Diff", "diff", "read_catalog"]

# The namespace each stamped object lives in (extensions: none, they are database-wide).
_STAMPED = text(
    """
    SELECT d.description, CASE d.classoid
        WHEN 'pg_catalog.pg_proc'::regclass THEN
            (SELECT p.pronamespace FROM pg_catalog.pg_proc p WHERE p.oid = d.objoid)
        WHEN 'pg_catalog.pg_trigger'::regclass THEN
            (SELECT c.relnamespace FROM pg_catalog.pg_trigger t
             JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid WHERE t.oid = d.objoid)
        WHEN 'pg_catalog.pg_policy'::regclass THEN
            (SELECT c.relnamespace FROM pg_catalog.pg_policy p
             JOIN pg_catalog.pg_class c ON c.oid = p.polrelid WHERE p.oid = d.objoid)
        WHEN 'pg_catalog.pg_class'::regclass THEN
            (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = d.objoid)
        WHEN 'pg_catalog.pg_constraint'::regclass THEN
            (SELECT c.connamespace FROM pg_catalog.pg_constraint c WHERE c.oid = d.objoid)
        END::regnamespace::text AS nspname
    FROM pg_catalog.pg_description d
    WHERE d.objsubid = 0 AND starts_with(d.description, :prefix)
    ORDER BY d.objoid
    """
)
_CURRENT_SCHEMA = text("SELECT current_schema()")
_EXTENSIONS = text("SELECT extname FROM pg_catalog.pg_extension")


def read_catalog(
    connection: Connection,
    tables: Iterable[Table] = (),
    schemas: Iterable[str | None] = (None,),
) -> dict[tuple[str, ...], Entity]:
    """Our objects in ``schemas`` (``None``: the current schema) as the database holds them,
    keyed like :meth:`Entity.key`, plus row-level security state of ``tables``."""
    default = connection.execute(_CURRENT_SCHEMA).scalar_one()
    wanted = {schema or default for schema in schemas}
    found: dict[tuple[str, ...], Entity] = {}
    for description, namespace in connection.execute(_STAMPED, {"prefix": COMMENT_PREFIX}):
        if namespace is not None and namespace.strip('"') not in wanted:
            continue
        entity = entity_from_spec(json.loads(description[len(COMMENT_PREFIX) :]))
        found[entity.key()] = entity
    by_schema: dict[str | None, list[str]] = {}
    for table in tables:
        by_schema.setdefault(table.schema, []).append(table.name)
    if by_schema:
        for kind in live_kinds():
            for entity in kind.read_live(connection, by_schema):
                found[entity.key()] = entity
    return found


def installed_extensions(connection: Connection) -> set[str]:
    return {name for (name,) in connection.execute(_EXTENSIONS)}


@dataclass
class Diff:
    """What turns the database into the models: creates, replaces (new, old) and drops."""

    create: list[Entity]
    replace: list[tuple[Entity, Entity]]
    drop: list[Entity]

    def __bool__(self) -> bool:
        return bool(self.create or self.replace or self.drop)


def diff(
    connection: Connection,
    wanted: Sequence[Entity],
    tables: Iterable[Table] = (),
    schemas: Iterable[str | None] = (None,),
) -> Diff:
    """Compare the models' objects with the catalog; only real differences come back."""
    tables = list(tables)
    # The models' own objects are compared wherever they live, even in a schema Alembic was
    # not asked to scan (include_schemas off), or they would look missing on every run.
    own: set[str | None] = {
        getattr(e, "schema", None) for e in wanted if not isinstance(e, Extension)
    }
    schemas = set(schemas) | own
    current = read_catalog(connection, tables, schemas)
    extensions = installed_extensions(connection)
    result = Diff([], [], [])
    wanted_keys = set()
    for entity in wanted:
        key = entity.key()
        wanted_keys.add(key)
        old = current.get(key)
        if old is None:
            if isinstance(entity, Extension) and entity.name in extensions:
                continue  # someone else installed it: use it, never claim it
            result.create.append(entity)
        elif not entity.same_in_database(old, connection):
            result.replace.append((entity, old))
    model_tables = {(t.schema or "", t.name) for t in tables}
    for key, entity in current.items():
        if key in wanted_keys or entity.kept_when_undeclared:
            continue
        if not entity.commented and (getattr(entity, "schema", None) or "", getattr(entity, "table", "")) not in model_tables:
            continue  # live state (RLS, grants) of a table the models do not own
        if isinstance(entity, Extension):
            # Database-wide and possibly used by other code or projects: autogenerate never
            # drops one; the downgrade of the migration that created it does.
            continue
        result.drop.append(entity)
    result.drop.sort(key=lambda e: -e.order)
    return result
