"""Autogenerate planning for views: what cannot be replaced in place is rebuilt, with every
view that reads it, in ``pg_depend`` order.

- A plain view whose output columns (names and types, as PostgreSQL reports them) stay the same
  is replaced with ``CREATE OR REPLACE``. Any other column change (even appended columns, whose
  downgrade ``CREATE OR REPLACE`` could not undo) drops and recreates it.
- A materialized view whose query is unchanged (canonically) only gets its indexes adjusted;
  otherwise it is dropped and recreated with its indexes.
- A table column whose type changes or that is dropped by the same migration rebuilds the views
  reading that column (column-level ``pg_depend``) (PostgreSQL refuses to alter a column a view uses).
- A view dropped and created under the same name as another kind (a materialized view that now
  reads tables under row-level security; one that became a tenant materialized view, whose name
  is now its tenant view's) is rebuilt like a changed one.

Rebuilding a view rebuilds its dependents too (``DROP`` dependents first, before Alembic's table
operations; ``CREATE`` dependencies first, after them). A dependent sa_patterns does not manage
cannot be recreated, so autogenerate stops with an error naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from alembic.operations.ops import AlterColumnOp, DropColumnOp, ModifyTableOps, UpgradeOps
from sqlalchemy import text
from sqlalchemy.engine import Connection

from ..errors import ConfigurationError
from ..schema.catalog import Diff, read_catalog
from ..schema.objects import Entity, MaterializedView, View, live_kinds, qualified
from ..schema.view_catalog import ViewGraph, canonical, column_readers, live, read_view_graph

__all__ = ["plan_views"]


def _relkind(kind: type[Entity]) -> str | None:
    """``"v"`` or ``"m"`` for the kinds of views and materialized views: the core ones, their
    subclasses, and a pattern's own view kinds declaring ``relkind`` (a tenant materialized
    view's filtering view), which are planned (rebuilt, dropped in order) like the others."""
    if issubclass(kind, View):
        return "v"
    if issubclass(kind, MaterializedView):
        return "m"
    declared = getattr(kind, "relkind", None)
    return declared if declared in ("v", "m") else None


def _kinds(relkind: str) -> list[str]:
    """The entity kinds an object of ``relkind`` may be."""
    return [k.kind for k in live_kinds() if _relkind(k) == relkind]


def _is_view(entity: Entity) -> bool:
    return _relkind(type(entity)) is not None


def _place(entity: Entity, default: str) -> tuple[str, str]:
    return (getattr(entity, "schema", None) or default, str(getattr(entity, "name", "")))


def _in_place(connection: Connection, new: Entity, old: Entity) -> Entity | None:
    """The entity to replace ``old`` with in place, or ``None`` when it must be rebuilt."""
    if _relkind(type(new)) == "v" and _relkind(type(old)) == "v":
        stored = live(connection, getattr(old, "schema", None), str(getattr(old, "name", "")))
        wanted = canonical(connection, str(getattr(new, "definition", "")))
        if stored is None or wanted is None or stored.columns != wanted.columns:
            return None
        return new
    if isinstance(new, MaterializedView) and isinstance(old, MaterializedView):
        if new.with_data != old.with_data:
            return None
        if new.definition != old.definition:
            stored = live(connection, old.schema, old.name)
            wanted = canonical(connection, new.definition)
            if stored is None or stored != wanted:
                return None
        # same query: keep the stored text so only the indexes change
        return dataclasses.replace(new, definition=old.definition)
    return None


def _altered_columns(upgrade_ops: UpgradeOps) -> Iterable[tuple[str | None, str, list[str]]]:
    """Table columns this migration drops or retypes (views reading them block the ALTER)."""
    for op in upgrade_ops.ops:
        if isinstance(op, ModifyTableOps):
            columns = [
                sub.column_name
                for sub in op.ops
                if isinstance(sub, DropColumnOp)
                or (isinstance(sub, AlterColumnOp) and sub.modify_type is not None)
            ]
            if columns:
                yield op.schema, op.table_name, columns


def plan_views(
    connection: Connection,
    changes: Diff,
    wanted: Sequence[Entity],
    upgrade_ops: UpgradeOps,
    schemas: Iterable[str | None] = (None,),
) -> list[Entity]:
    """Rewrite ``changes`` for views; return every view to drop, dependents first.

    View drops leave ``changes.drop``; rebuilt views are dropped (old definition) and added to
    ``changes.create`` (new definition), so the downgrade recreates exactly what was there.
    """
    if not any(_is_view(e) for e in wanted) and not any(_is_view(e) for e in changes.drop):
        return []
    graph = read_view_graph(connection)
    default = connection.execute(text("SELECT current_schema()")).scalar_one()
    current = read_catalog(connection, (), schemas)
    by_key = {e.key(): e for e in wanted}

    def oid_of(entity: Entity) -> int | None:
        assert _is_view(entity)
        return graph.find(*_place(entity, default))

    seeds: set[int] = set()
    for new, old in list(changes.replace):
        if not _is_view(new):
            continue
        replacement = _in_place(connection, new, old)
        changes.replace.remove((new, old))
        if replacement is not None:
            changes.replace.append((replacement, old))
        elif (oid := oid_of(old)) is not None:
            seeds.add(oid)
    # a view dropped and created again under its name as another kind (a materialized view
    # that now reads tables under row-level security, or became a tenant one's view): rebuilt
    # like a changed one, with the views reading it
    created = {_place(e, default) for e in changes.create if _is_view(e)}
    for entity in changes.drop:
        if _is_view(entity) and _place(entity, default) in created and (oid := oid_of(entity)) is not None:
            seeds.add(oid)
    for schema, table, columns in _altered_columns(upgrade_ops):
        seeds.update(column_readers(connection, schema, table, columns))

    rebuild: set[int] = set(seeds)
    for oid in seeds:
        rebuild.update(graph.dependents(oid))
    dropped: list[Entity] = [e for e in changes.drop if _is_view(e)]
    changes.drop[:] = [e for e in changes.drop if not _is_view(e)]
    dropped_keys = {e.key() for e in dropped}
    for oid in graph.ordered(rebuild):
        stored, model = _entities(graph, oid, default, current, by_key)
        if stored is None:
            nsp, name, _ = graph.nodes[oid]
            raise ConfigurationError(
                f"view {qualified(nsp, name)} reads a view or table this migration must rebuild, "
                f"but sa_patterns does not manage it, so it cannot be recreated. Declare it as a "
                f"View/MaterializedView model, or drop it (and recreate it) by hand in the "
                f"migration."
            )
        if stored.key() in dropped_keys:
            continue
        dropped.append(stored)
        dropped_keys.add(stored.key())
        if model is not None:
            changes.replace[:] = [(n, o) for n, o in changes.replace if n.key() != model.key()]
            changes.create.append(model)
    return _dependents_first(graph, dropped, oid_of)


def _entities(
    graph: ViewGraph,
    oid: int,
    default: str,
    current: dict[tuple[str, ...], Entity],
    by_key: dict[tuple[str, ...], Entity],
) -> tuple[Entity | None, Entity | None]:
    nsp, name, relkind = graph.nodes[oid]
    keys = [(kind, nsp, name) for kind in _kinds(relkind)]
    keys += [(kind, "", name) for kind in _kinds(relkind)] if nsp == default else []
    old = next((current[k] for k in keys if k in current), None)
    new = next((by_key[k] for k in keys if k in by_key), None)
    return old, new


def _dependents_first(
    graph: ViewGraph, entities: list[Entity], oid_of: Callable[[Entity], int | None]
) -> list[Entity]:
    located = {id(e): oid_of(e) for e in entities}
    order = {oid: i for i, oid in enumerate(graph.ordered(o for o in located.values() if o is not None))}

    def rank(entity: Entity) -> int:
        oid = located[id(entity)]
        return -order[oid] if oid in order else 1  # unknown to the catalog: last

    return sorted(entities, key=rank)
