"""The ``sa_patterns`` autogenerate plugin: models' objects vs the live catalog.

Drops go before Alembic's table operations (a trigger must go before its table does), creates
and replaces after them (a trigger needs its table), extensions first of all (an index may need
``pg_trgm``). The downgrade is the exact reverse.
"""

from __future__ import annotations

from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import DropTableOp, MigrateOperation, ModifyTableOps, UpgradeOps
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import MetaData, Table, text
from sqlalchemy.engine import Connection

from ..schema.catalog import diff
from ..schema.objects import Entity, Extension
from ..schema.registry import is_real_table, registered
from .ops import CreateEntityOp, DropEntityOp, ReplaceEntityOp
from .view_plan import plan_views


def _metadatas(autogen_context: AutogenContext) -> list[MetaData]:
    target = autogen_context.metadata
    if target is None:
        return []
    return [target] if isinstance(target, MetaData) else list(target)


_PARTITIONS = text(
    "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relispartition"
)


def _keep_partitions(connection: Connection, upgrade_ops: UpgradeOps) -> None:
    """Partitions are data made by maintenance functions, not models: never drop them."""
    if not any(isinstance(op, DropTableOp | ModifyTableOps) for op in upgrade_ops.ops):
        return
    default = connection.execute(text("SELECT current_schema()")).scalar_one()
    partitions = {(nsp, name) for nsp, name in connection.execute(_PARTITIONS)}
    # Also the ModifyTableOps of a partition (e.g. dropping the indexes it inherits).
    upgrade_ops.ops = [
        op
        for op in upgrade_ops.ops
        if not (
            isinstance(op, DropTableOp | ModifyTableOps)
            and (op.schema or default, op.table_name) in partitions
        )
    ]


def compare_entities(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps, schemas: set[str | None]
) -> PriorityDispatchResult:
    connection = autogen_context.connection
    assert connection is not None
    wanted: list[Entity] = []
    tables: list[Table] = []
    for metadata in _metadatas(autogen_context):
        wanted.extend(registered(metadata))
        tables.extend(t for t in metadata.tables.values() if is_real_table(t))
    _keep_partitions(connection, upgrade_ops)
    changes = diff(connection, wanted, tables, schemas)
    # views: rebuild (with dependents) what cannot be replaced in place; drops in pg_depend order
    view_drops = plan_views(connection, changes, wanted, upgrade_ops, schemas)
    if not changes and not view_drops:
        return PriorityDispatchResult.CONTINUE

    first: list[MigrateOperation] = [
        CreateEntityOp(e) for e in changes.create if isinstance(e, Extension)
    ]
    before: list[MigrateOperation] = [
        DropEntityOp(e) for e in view_drops + changes.drop if not isinstance(e, Extension)
    ]
    after: list[MigrateOperation] = []
    position = {e.key(): i for i, e in enumerate(wanted)}  # declaration order breaks ties
    replaced = {new.key(): old for new, old in changes.replace}
    for entity in sorted(
        [e for e in changes.create if not isinstance(e, Extension)] + [n for n, _ in changes.replace],
        key=lambda e: (e.order, position.get(e.key(), -1)),
    ):
        old = replaced.get(entity.key())
        after.append(CreateEntityOp(entity) if old is None else ReplaceEntityOp(entity, old))
    last: list[MigrateOperation] = [DropEntityOp(e) for e in changes.drop if isinstance(e, Extension)]
    upgrade_ops.ops[:0] = first + before
    upgrade_ops.ops.extend(after + last)
    return PriorityDispatchResult.CONTINUE


def setup(plugin: Plugin) -> None:
    from . import compare_generated, compare_partial

    compare_generated.setup(plugin)  # generated columns (search vectors) via pg_get_expr
    compare_partial.setup(plugin)  # partial-index predicates (soft_unique) via pg_get_expr
    # LAST: Alembic's own table comparators have filled upgrade_ops by the time we run.
    plugin.add_autogenerate_comparator(compare_entities, "schema", priority=DispatchPriority.LAST)
