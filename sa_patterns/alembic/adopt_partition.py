"""Views and partitioning adopted over tables that have rows and writers.

**Materialized views.** ``CREATE MATERIALIZED VIEW ... WITH DATA`` runs its query under ACCESS
SHARE on the tables it reads: writers go on, however long it takes. Its unique index is built
on the new view, which nobody can read before the revision commits, so it is built in the
transaction. What stalls writers is a lock the same transaction holds on a table that exists while the view
is populated (the refresh policy a view over a row-level-security table needs: ``CREATE
POLICY`` takes ACCESS EXCLUSIVE until the commit). In a transaction that locks a table that
exists, autogenerate writes, for each materialized view over tables that exist,
``op.create_materialized_view_empty(...)`` (``WITH NO DATA``: instant) and, after the revision's
transaction, ``op.populate_materialized_view(name)``: its refresh function (or ``REFRESH``) in an
autocommit block, under ACCESS SHARE on the tables read. Until then the view is unpopulated
(a read of it fails), which only the new code, deployed after the migration, does.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import comparators, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from alembic.operations import ops as alembic_ops
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import DDL, MetaData, Table, text
from sqlalchemy.sql.util import find_tables

from ..schema.objects import Entity, MaterializedView, qualified
from .online_steps import OnlineSteps
from .ops import CreateEntityOp, DropEntityOp, ReplaceEntityOp, render_entity

__all__ = ["CreateMaterializedViewEmptyOp", "PopulateMaterializedViewOp"]

_NO_DATA = "\nWITH NO DATA"
_WITH_DATA = "\nWITH DATA"


@Operations.register_operation("create_materialized_view_empty")
class CreateMaterializedViewEmptyOp(MigrateOperation):
    """A materialized view created ``WITH NO DATA`` (its indexes, its comment as declared), to be
    filled by ``op.populate_materialized_view`` once the revision's locks are released."""

    def __init__(self, entity: MaterializedView) -> None:
        self.entity = entity

    @classmethod
    def create_materialized_view_empty(cls, operations: Operations, entity: MaterializedView) -> None:
        """Create ``entity`` empty: no scan of the tables it reads under the revision's locks."""
        operations.invoke(cls(entity))

    def reverse(self) -> DropEntityOp:
        return DropEntityOp(self.entity)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("create_materialized_view_empty", self.entity.describe())


@Operations.register_operation("populate_materialized_view")
class PopulateMaterializedViewOp(MigrateOperation):
    """Fill a materialized view created empty, after the revision's transaction."""

    def __init__(self, name: str, schema: str | None = None, refresh_function: str | None = None) -> None:
        self.name, self.schema, self.refresh_function = name, schema, refresh_function

    @classmethod
    def populate_materialized_view(
        cls, operations: Operations, name: str, *, schema: str | None = None, refresh_function: str | None = None
    ) -> None:
        """Commit the revision's transaction so far, then ``SELECT <refresh_function>(false)``
        (what reads a table under row-level security as its owner), or ``REFRESH MATERIALIZED
        VIEW`` without one: ACCESS SHARE on the tables it reads, so writers go on."""
        operations.invoke(cls(name, schema, refresh_function))

    def reverse(self) -> _NothingOp:
        return _NothingOp(f"# (the rows of {self.name}: dropped with it)")

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("populate_materialized_view", self.schema, self.name)


class _NothingOp(MigrateOperation):
    """A downgrade step with nothing to do, rendered as a comment."""

    def __init__(self, comment: str) -> None:
        self.comment = comment

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("nothing", self.comment)


def _empty_statements(entity: MaterializedView) -> list[str]:
    statements = entity.create_statements()
    out = []
    for statement in statements:
        if statement.startswith("CREATE MATERIALIZED VIEW") and statement.endswith(_WITH_DATA):
            statement = statement[: -len(_WITH_DATA)] + _NO_DATA
        out.append(statement)
    return out


@Operations.implementation_for(CreateMaterializedViewEmptyOp)
def _create_empty(operations: Operations, operation: CreateMaterializedViewEmptyOp) -> None:
    for statement in _empty_statements(operation.entity):
        operations.execute(DDL(statement.replace("%", "%%")))  # type: ignore[no-untyped-call]


@Operations.implementation_for(PopulateMaterializedViewOp)
def _populate(operations: Operations, operation: PopulateMaterializedViewOp) -> None:
    view = qualified(operation.schema, operation.name)
    steps = OnlineSteps(operations, f"populating {view}", lock_timeout="2s", retries=0)
    with operations.get_context().autocommit_block():
        function = operation.refresh_function
        if function and not steps.offline and steps.bind.execute(
            text("SELECT to_regprocedure(:f)"), {"f": f"{qualified(operation.schema, function)}(boolean)"}
        ).scalar() is None:
            function = None
        with steps.unlimited_wait():  # ACCESS SHARE on what it reads; the view is nobody's yet
            if function:
                steps.emit(f"SELECT {qualified(operation.schema, function)}(false)")
            else:
                steps.emit(f"REFRESH MATERIALIZED VIEW {view}")


@Operations.implementation_for(_NothingOp)
def _nothing(operations: Operations, operation: _NothingOp) -> None:
    return None


@renderers.dispatch_for(CreateMaterializedViewEmptyOp)
def _render_empty(autogen_context: AutogenContext, op: CreateMaterializedViewEmptyOp) -> str:
    call = render_entity(autogen_context, op.entity, lead=len("op.create_materialized_view_empty("))
    return f"op.create_materialized_view_empty({call})"


@renderers.dispatch_for(PopulateMaterializedViewOp)
def _render_populate(autogen_context: AutogenContext, op: PopulateMaterializedViewOp) -> str:
    args = [repr(op.name)]
    if op.schema:
        args.append(f"schema={op.schema!r}")
    if op.refresh_function:
        args.append(f"refresh_function={op.refresh_function!r}")
    return f"op.populate_materialized_view({', '.join(args)})"


@renderers.dispatch_for(_NothingOp)
def _render_nothing(autogen_context: AutogenContext, op: _NothingOp) -> str:
    return op.comment


# -- autogenerate -------------------------------------------------------------------------------

#: the toolkit's kinds whose DDL locks their table beyond ACCESS SHARE
_LOCKING = {"policy", "rls", "trigger", "tenant_reference"}


def _metadatas(autogen_context: AutogenContext) -> list[MetaData]:
    given = autogen_context.metadata
    return [] if given is None else [given] if isinstance(given, MetaData) else list(given)


def _locked(upgrade_ops: Any) -> set[tuple[str, str]]:
    """Tables the upgrade's transaction locks beyond ACCESS SHARE (altered, or given a policy,
    row-level security, a trigger, a constraint)."""
    locked: set[tuple[str, str]] = set()
    for op in upgrade_ops.ops:
        if isinstance(op, alembic_ops.ModifyTableOps) and op.ops:
            locked.add((op.schema or "", op.table_name))
        elif isinstance(op, CreateEntityOp | DropEntityOp | ReplaceEntityOp):
            entity: Entity = op.entity
            if entity.kind in _LOCKING:
                locked.add((getattr(entity, "schema", None) or "", str(getattr(entity, "table", ""))))
    return locked


@comparators.dispatch_for("schema", priority=DispatchPriority.FIRST)
def _install(autogen_context: AutogenContext, upgrade_ops: Any, schemas: Any) -> PriorityDispatchResult:
    """Run :func:`_populate_after_commit` last in this run, after the plugins' comparators."""
    autogen_context.comparators.dispatch_for("schema", priority=DispatchPriority.LAST)(_populate_after_commit)
    return PriorityDispatchResult.CONTINUE


def _populate_after_commit(autogen_context: AutogenContext, upgrade_ops: Any, schemas: Any) -> PriorityDispatchResult:
    """In a transaction that locks a table that exists (a refresh policy on a table the view
    reads, a column added anywhere), a materialized view over tables that exist is created empty
    and populated after the transaction: its query would otherwise run while those locks are
    held."""
    from ..views import _MATVIEWS_KEY, _SELECTS_KEY, refresh_function_name

    created = {(o.schema or "", o.table_name) for o in upgrade_ops.ops if isinstance(o, alembic_ops.CreateTableOp)}
    if not _locked(upgrade_ops) - created:
        return PriorityDispatchResult.CONTINUE
    populate: list[MigrateOperation] = []
    for md in _metadatas(autogen_context):
        for key, (schema, storage) in md.info.get(_MATVIEWS_KEY, {}).items():
            select = md.info.get(_SELECTS_KEY, {}).get(key)
            reads = {(t.schema or "", t.name) for t in find_tables(select) if isinstance(t, Table)}
            if select is None or not reads - created:
                continue  # a view over new tables: empty, nobody waits on its population
            for i, op in enumerate(upgrade_ops.ops):
                entity = getattr(op, "entity", None)
                if (isinstance(op, CreateEntityOp) and isinstance(entity, MaterializedView) and entity.with_data
                        and (entity.schema or "", entity.name) == (schema or "", storage)):
                    upgrade_ops.ops[i] = CreateMaterializedViewEmptyOp(entity)
                    populate.append(PopulateMaterializedViewOp(storage, schema, refresh_function_name(storage)))
    upgrade_ops.ops.extend(populate)
    return PriorityDispatchResult.CONTINUE
