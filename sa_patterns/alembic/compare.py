"""The ``sa_patterns`` autogenerate plugin: models' objects vs the live catalog.

Two comparisons: the objects' ``sa_patterns:`` comments against the models (what changed in the
models since the last migration), then the live definitions against the models
(:mod:`sa_patterns.schema.live`: what was changed by hand in the database, comment kept). Each
drift becomes a replace or drop operation marked as a repair, whose downgrade does nothing.

Drops go before Alembic's table operations (a trigger must go before its table does), creates
and replaces after them (a trigger needs its table), extensions first of all (an index may need
``pg_trgm``). The downgrade is the exact reverse.
"""

from __future__ import annotations

import logging
from collections import Counter

from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import DropTableOp, MigrateOperation, ModifyTableOps, UpgradeOps
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import MetaData, Table, text
from sqlalchemy.engine import Connection

from ..schema.catalog import diff
from ..schema.live import drifts
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
    # hand edits the comments cannot show; objects the steps above already rebuild are skipped
    repairs = [d for d in drifts(connection, wanted, changes, _policed(autogen_context)) if d.action != "none"]
    repaired = {d.entity.key() for d in repairs}
    # the comment diff's own operation gives way to the repair (a trigger or policy made again
    # by hand without our comment: replaced, since CREATE fails; RLS: marked as a repair)
    changes.create[:] = [e for e in changes.create if e.key() not in repaired]
    changes.replace[:] = [(n, o) for n, o in changes.replace if n.key() not in repaired]
    if not changes and not view_drops and not repairs:
        return PriorityDispatchResult.CONTINUE

    first: list[MigrateOperation] = [
        CreateEntityOp(e) for e in changes.create if isinstance(e, Extension)
    ]
    before: list[MigrateOperation] = [
        DropEntityOp(e) for e in view_drops + changes.drop if not isinstance(e, Extension)
    ]
    before += [DropEntityOp(d.entity, repair=d.what()) for d in repairs if d.action == "drop"]
    after: list[MigrateOperation] = []
    position = {e.key(): i for i, e in enumerate(wanted)}  # declaration order breaks ties
    replaced = {new.key(): old for new, old in changes.replace}
    fixes = {d.entity.key(): d for d in repairs if d.action in ("create", "replace")}
    for entity in sorted(
        [e for e in changes.create if not isinstance(e, Extension)]
        + [n for n, _ in changes.replace]
        + [d.entity for d in fixes.values()],
        key=lambda e: (e.order, position.get(e.key(), -1)),
    ):
        fix = fixes.get(entity.key())
        old = replaced.get(entity.key())
        if fix is not None and fix.action == "create":
            after.append(CreateEntityOp(entity, repair=fix.what()))
        elif fix is not None:
            after.append(ReplaceEntityOp(entity, fix.old or entity, repair=fix.what()))
        else:
            after.append(CreateEntityOp(entity) if old is None else ReplaceEntityOp(entity, old))
    last: list[MigrateOperation] = [DropEntityOp(e) for e in changes.drop if isinstance(e, Extension)]
    upgrade_ops.ops[:0] = first + before
    upgrade_ops.ops.extend(after + last)
    _log(first + before + after + last)
    return PriorityDispatchResult.CONTINUE


# a child of Alembic's logger: shown where its "Detected added table" lines are
_LOG = logging.getLogger("alembic.autogenerate.sa_patterns")


def _log(ops: list[MigrateOperation]) -> None:
    """What autogenerate found beside the tables, as Alembic says it for tables: creations
    counted by kind (a new model brings dozens of grants), changes, removals and repairs of hand
    edits one by one."""
    ours = [op for op in ops if isinstance(op, CreateEntityOp | DropEntityOp | ReplaceEntityOp)]
    created = Counter(op.entity.kind for op in ours if isinstance(op, CreateEntityOp) and not op.repair)
    if created:
        kinds = ", ".join(f"{kind} ×{n}" for kind, n in sorted(created.items()))
        _LOG.info("Detected added sa_patterns objects: %s", kinds)
    for op in ours:
        if isinstance(op, CreateEntityOp) and not op.repair:
            continue
        verb = "removed" if isinstance(op, DropEntityOp) else "changed"
        _LOG.info("Detected %s %s%s", verb, op.entity.describe(), f" ({op.repair})" if op.repair else "")


def _policed(autogen_context: AutogenContext) -> list[tuple[str | None, str]]:
    """Tenant tables: their policies must be exactly the declared ones."""
    from ..tenancy import tenant_tables

    return [(t.schema, t.name) for md in _metadatas(autogen_context) for t in tenant_tables(md)]


def setup(plugin: Plugin) -> None:
    from . import compare_generated, compare_partial

    compare_generated.setup(plugin)  # generated columns (search vectors) via pg_get_expr
    compare_partial.setup(plugin)  # partial-index predicates (soft_unique) via pg_get_expr
    # LAST: Alembic's own table comparators have filled upgrade_ops by the time we run.
    plugin.add_autogenerate_comparator(compare_entities, "schema", priority=DispatchPriority.LAST)
