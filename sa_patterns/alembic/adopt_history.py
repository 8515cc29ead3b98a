"""``op.backfill_versions``: ``Versioned`` added to a table that has rows and writers gives every
existing row its version 1, in committed batches, without stalling the writers.

Autogenerate writes, for a table that exists, the history table (new, so nothing waits on it),
the trigger function and four statement-level triggers (``CREATE TRIGGER``: SHARE ROW
EXCLUSIVE on the table, a brief lock taken under the revision's ``lock_timeout`` and held until
the revision's transaction commits). Rows from before then have no version, so ``as_of`` would
not see them. The comparator at the end of this module appends ``op.backfill_versions(table)``
after the triggers. It runs in ``autocommit_block()`` (which first commits what precedes it: the
triggers are in force from then on) the resumable backfill ``<table>.version_one``
(:func:`sa_patterns.backfill.version_one`): batches of ``INSERT ... SELECT`` into the history,
each its own short transaction, skipping every row that has a current version. A row the
writers insert or update after the commit gets its version 1 from the triggers, so it is
skipped; a row a batch has locked is updated after the batch commits, and its trigger then opens
version 2. Every row ends with exactly one version 1 (the history's key forbids two). At the end
the backfill record is forgotten.

The revision is committed up to the triggers when the backfill starts, so an interrupted
backfill cannot be resumed by replaying the revision (its tables exist): the error says to
finish it with :func:`sa_patterns.versioning.backfill` (the same record, so it resumes where it
stopped), then ``alembic stamp`` the revision.

Offline (``--sql``, the linter) the backfill renders as a comment: it needs a live database.
The downgrade forgets the record (the history table it filled is dropped by the downgrade).
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from alembic.operations import ops as alembic_ops
from alembic.util import PriorityDispatchResult
from sqlalchemy import MetaData, Table, text

from ..backfill import run_backfill
from ..context import all_tenants
from ..errors import BackfillError, ConfigurationError
from ..schema.objects import ident, qualified
from .online_steps import OnlineSteps, metadata_tables, run_last

__all__ = ["BackfillVersionsOp", "ForgetVersionsOp"]


@Operations.register_operation("backfill_versions")
class BackfillVersionsOp(MigrateOperation):
    """Version 1 for every row of a table that became ``Versioned`` with rows in it."""

    def __init__(self, table_name: str, *, schema: str | None = None, batch_size: int = 1000) -> None:
        self.table_name, self.schema, self.batch_size = table_name, schema, batch_size

    @classmethod
    def backfill_versions(
        cls, operations: Operations, table_name: str, *, schema: str | None = None, batch_size: int = 1000
    ) -> None:
        """After the history table and its triggers: commits the revision's transaction so far
        (the triggers then version every write), then opens version 1 of the older rows in
        committed batches of ``batch_size``; an interrupted run resumes."""
        operations.invoke(cls(table_name, schema=schema, batch_size=batch_size))

    @property
    def backfill_name(self) -> str:
        return f"{self.table_name}.version_one"

    def reverse(self) -> ForgetVersionsOp:
        return ForgetVersionsOp(self.table_name, schema=self.schema)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("backfill_versions", self.schema, self.table_name)


@Operations.register_operation("forget_versions_backfill")
class ForgetVersionsOp(MigrateOperation):
    """The downgrade of :class:`BackfillVersionsOp`: the backfill record of an interrupted run
    is forgotten, so an upgrade after the downgrade (a new, empty history) starts from scratch."""

    def __init__(self, table_name: str, *, schema: str | None = None) -> None:
        self.table_name, self.schema = table_name, schema

    @classmethod
    def forget_versions_backfill(cls, operations: Operations, table_name: str, *, schema: str | None = None) -> None:
        """Forget ``<table>.version_one``'s progress (nothing else: the history goes with its table)."""
        operations.invoke(cls(table_name, schema=schema))

    def reverse(self) -> BackfillVersionsOp:
        return BackfillVersionsOp(self.table_name, schema=self.schema)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("forget_versions_backfill", self.schema, self.table_name)


@Operations.implementation_for(BackfillVersionsOp)
def _backfill_versions(operations: Operations, operation: BackfillVersionsOp) -> None:
    table = qualified(operation.schema, operation.table_name)
    steps = OnlineSteps(operations, f"versioning {table}", lock_timeout="2s", retries=0)
    with operations.get_context().autocommit_block():
        if steps.offline:
            steps.emit(
                f"-- sa_patterns: version 1 for every row of {table} without a current version, in "
                f"batches of {operation.batch_size} that commit (backfill {operation.backfill_name!r}; "
                "online only)"
            )
            return
        live = MetaData()
        source = Table(operation.table_name, live, schema=operation.schema, autoload_with=steps.bind)
        history = Table(ident(operation.table_name, "history"), live, schema=operation.schema,
                        autoload_with=steps.bind)
        from ..versioning import link_history, version_one_backfill

        link_history(source, history)
        # no JIT for the batches: the new history's estimates make each small batch look costly
        # enough to compile (close to a second a batch, for a query that takes milliseconds)
        jit = steps.bind.execute(text("SELECT current_setting('jit')")).scalar_one()
        steps.bind.execute(text("SELECT set_config('jit', 'off', false)"))
        try:
            with all_tenants():  # a tenant table's history under forced row-level security: the owner reads it all
                run_backfill(steps.bind, version_one_backfill(source, name=operation.backfill_name),
                             batch_size=operation.batch_size)
        except Exception as exc:
            raise BackfillError(
                f"versioning {table}: the backfill of version 1 stopped ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}). The history table and its triggers are committed "
                "(every write since is versioned) and the batches done are kept, but this revision is "
                "not stamped and cannot be replayed (its tables exist). Finish the backfill where it "
                f"stopped, with versioning.backfill(engine, Model) or `sa-patterns backfill` of "
                f"version_one(Model) (backfill {operation.backfill_name!r}), then `alembic stamp` this "
                "revision."
            ) from exc
        finally:
            steps.bind.execute(text("SELECT set_config('jit', :v, false)"), {"v": jit})
        steps.forget(operation.backfill_name)


@Operations.implementation_for(ForgetVersionsOp)
def _forget_versions(operations: Operations, operation: ForgetVersionsOp) -> None:
    steps = OnlineSteps(operations, f"versioning {operation.table_name}", lock_timeout="2s", retries=0)
    if steps.offline:
        return
    with operations.get_context().autocommit_block():
        steps.forget(BackfillVersionsOp(operation.table_name).backfill_name)


@renderers.dispatch_for(BackfillVersionsOp)
def _render_backfill(autogen_context: AutogenContext, op: BackfillVersionsOp) -> str:
    args = [repr(op.table_name)]
    if op.schema:
        args.append(f"schema={op.schema!r}")
    if op.batch_size != 1000:
        args.append(f"batch_size={op.batch_size}")
    return f"op.backfill_versions({', '.join(args)})"


@renderers.dispatch_for(ForgetVersionsOp)
def _render_forget(autogen_context: AutogenContext, op: ForgetVersionsOp) -> str:
    schema = f", schema={op.schema!r}" if op.schema else ""
    return f"op.forget_versions_backfill({op.table_name!r}{schema})"


# -- autogenerate: a table that exists becomes Versioned ---------------------------------------


@run_last
def _backfill_new_histories(autogen_context: AutogenContext, upgrade_ops: Any, schemas: Any) -> PriorityDispatchResult:
    """A history table created for a source table the revision does not create: the source has
    (or may have) rows, so ``op.backfill_versions`` goes last in the upgrade."""
    from ..versioning import history_table

    tables = metadata_tables(autogen_context)
    created = {(o.schema or "", o.table_name) for o in upgrade_ops.ops if isinstance(o, alembic_ops.CreateTableOp)}
    for key, table in tables.items():
        try:
            history = history_table(table)
        except ConfigurationError:  # not Versioned
            continue
        if key not in created and ((history.schema or ""), history.name) in created:
            upgrade_ops.ops.append(BackfillVersionsOp(table.name, schema=table.schema))
    return PriorityDispatchResult.CONTINUE
