"""``op.add_tenant_column``: ``TenantMixin``'s ``tenant_id`` added to a table that has rows and
writers, without stalling them; ``op.drop_tenant_column`` is its downgrade.

Autogenerate writes ``ADD COLUMN tenant_id BIGINT NOT NULL`` (it fails on a table with rows) and
the index. Replace those two operations with ``op.add_tenant_column(table, source=...)``, or
decorate the model with :func:`~sa_patterns.tenancy.adopt.adopt_tenants` and autogenerate writes
it (the comparator at the end of this module). It runs, outside the migration's transaction:

1. ``ADD COLUMN tenant_id`` nullable, and a trigger filling ``tenant_id`` from the same source on
   the rows the old application inserts (or updates) meanwhile: one short transaction under
   ``SET LOCAL lock_timeout``, retried when it times out;
2. the fill of the existing rows: a resumable backfill named ``<table>.tenant_id``
   (:mod:`sa_patterns.backfill`), inside ``all_tenants()`` so a parent table whose row-level
   security is already forced is read whole by the owner; then rows still without a tenant (a
   parent that does not exist) stop the migration, naming how many and a few keys, while
   ``tenant_id`` is still nullable;
3. ``CHECK (tenant_id IS NOT NULL) NOT VALID`` (brief), ``VALIDATE`` (SHARE UPDATE EXCLUSIVE:
   reads and writes go on), ``SET NOT NULL`` (no scan: PostgreSQL 12+ uses the valid check) and
   the check dropped, in one brief transaction;
4. the index ``CREATE INDEX CONCURRENTLY``;
5. the trigger dropped; with ``keep_trigger=True`` it is left to ``op.drop_tenant_fill`` at the
   end of the revision, after the row-level security and policies autogenerate writes (each a
   brief lock in the migration's transaction), so the old code's inserts get a tenant until the
   migration commits.

Every step is idempotent, so an upgrade that stopped (an interruption, orphans, a lock it could
not get) is run again and resumes. Offline (``--sql``, the linter) the steps render as the SQL
they run; the fill, which needs a live database, renders as a comment.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from alembic.operations import ops as alembic_ops
from alembic.util import PriorityDispatchResult
from sqlalchemy import DDL, BigInteger, MetaData, Table, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.type_api import TypeEngine

from ..backfill import Backfill, run_backfill
from ..context import all_tenants
from ..errors import BackfillError
from ..schema.objects import ident, qualified, quote
from ..tenancy.adopt import TenantSource, adoption_of, no_existing_rows, tenant_source
from ..tenancy.tables import is_tenant_table
from .online_steps import OnlineSteps, check_lock_timeout, metadata_tables, run_last

__all__ = ["AddTenantColumnOp", "DropTenantColumnOp", "DropTenantFillOp"]

_CHECK_VIOLATION = "23514"


@Operations.register_operation("add_tenant_column")
class AddTenantColumnOp(MigrateOperation):
    """Add ``tenant_id`` to a populated table and fill it from ``source`` without stalling its
    writers (see the module docstring for the steps and their locks)."""

    def __init__(
        self,
        table_name: str,
        source: TenantSource | int | str,
        *,
        schema: str | None = None,
        type_: TypeEngine[Any] | None = None,
        index_name: str | None = None,
        batch_size: int = 1000,
        lock_timeout: str = "2s",
        retries: int = 10,
        keep_trigger: bool = False,
    ) -> None:
        self.keep_trigger = keep_trigger
        self.table_name, self.source, self.schema = table_name, tenant_source(source), schema
        self.type_ = type_ if type_ is not None else BigInteger()
        self.index_name = index_name or f"ix_{table_name}_tenant_id"
        self.batch_size, self.lock_timeout, self.retries = batch_size, lock_timeout, retries
        check_lock_timeout("add_tenant_column", lock_timeout)

    @classmethod
    def add_tenant_column(
        cls,
        operations: Operations,
        table_name: str,
        source: TenantSource | int | str,
        *,
        schema: str | None = None,
        type_: TypeEngine[Any] | None = None,
        index_name: str | None = None,
        batch_size: int = 1000,
        lock_timeout: str = "2s",
        retries: int = 10,
        keep_trigger: bool = False,
    ) -> None:
        """``source``: ``tenant_constant(42)`` (or ``42``), ``tenant_column("org_id")`` (or
        ``"org_id"``), or ``tenant_from("projects", on="project_id")``. ``type_`` is the
        model's ``__tenant_type__`` (BigInteger by default), ``index_name`` the index the model
        declares (``ix_<table>_tenant_id`` by default). ``lock_timeout`` bounds each brief lock
        step, retried ``retries`` times. ``keep_trigger``: the trigger keeps filling
        ``tenant_id`` of rows the old code inserts after this operation, until
        ``op.drop_tenant_fill`` (at the end of the revision, after the policies: the old code
        writes until then)."""
        operations.invoke(cls(
            table_name, source, schema=schema, type_=type_, index_name=index_name,
            batch_size=batch_size, lock_timeout=lock_timeout, retries=retries, keep_trigger=keep_trigger,
        ))

    @property
    def backfill_name(self) -> str:
        return f"{self.table_name}.tenant_id"

    def reverse(self) -> DropTenantColumnOp:
        return DropTenantColumnOp(self)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_tenant_column", self.schema, self.table_name, repr(self.source))


@Operations.register_operation("drop_tenant_column")
class DropTenantColumnOp(MigrateOperation):
    """The downgrade of :class:`AddTenantColumnOp`: the index dropped ``CONCURRENTLY``, then
    ``DROP COLUMN`` (a brief ACCESS EXCLUSIVE lock: no rewrite). The tenants are lost; an
    upgrade fills them again from the source."""

    def __init__(self, added: AddTenantColumnOp) -> None:
        self.added = added

    @classmethod
    def drop_tenant_column(
        cls, operations: Operations, table_name: str, source: TenantSource | int | str, **kw: Any
    ) -> None:
        """The same arguments as the ``add_tenant_column`` call it undoes (those that do not
        concern the drop, such as ``batch_size``, are ignored)."""
        operations.invoke(cls(AddTenantColumnOp(table_name, source, **kw)))

    def reverse(self) -> AddTenantColumnOp:
        return self.added

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_tenant_column", self.added.schema, self.added.table_name)


@Operations.register_operation("drop_tenant_fill")
class DropTenantFillOp(MigrateOperation):
    """Drop the trigger ``add_tenant_column(..., keep_trigger=True)`` left filling the rows the
    old code inserts: in the migration's transaction (a brief ACCESS EXCLUSIVE lock), after the
    policies, so no row is inserted without a tenant in between."""

    def __init__(self, table_name: str, schema: str | None = None, lock_timeout: str = "2s") -> None:
        self.table_name, self.schema, self.lock_timeout = table_name, schema, lock_timeout

    @classmethod
    def drop_tenant_fill(
        cls, operations: Operations, table_name: str, *, schema: str | None = None, lock_timeout: str = "2s"
    ) -> None:
        """The revision's last operation: ``SET LOCAL lock_timeout`` (for the rest of the
        migration's transaction), then the trigger and its function dropped."""
        operations.invoke(cls(table_name, schema, lock_timeout))

    def reverse(self) -> _NothingToRestoreOp:
        return _NothingToRestoreOp(self.table_name)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_tenant_fill", self.schema, self.table_name)


class _NothingToRestoreOp(MigrateOperation):
    """The downgrade of ``drop_tenant_fill``: the trigger lived only during the upgrade."""

    def __init__(self, table_name: str) -> None:
        self.table_name = table_name

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("nothing_to_restore", self.table_name)


# -- running the steps -------------------------------------------------------------------------


class _Steps(OnlineSteps):
    """The statements of one tenant adoption, and how each runs online and renders offline."""

    def __init__(self, operations: Operations, op: AddTenantColumnOp) -> None:
        super().__init__(operations, f"adopting tenant_id on {qualified(op.schema, op.table_name)}",
                         lock_timeout=op.lock_timeout, retries=op.retries)
        self.op = op
        self.table = qualified(op.schema, op.table_name)
        self.sql_type = str(op.type_.compile(dialect=postgresql.dialect())).lower()  # type: ignore[no-untyped-call]
        self.function = qualified(op.schema, ident(op.table_name, "tenant_id_fill"))
        self.trigger = quote(ident(op.table_name, "tenant_id_fill"))
        self.check = quote(ident(op.table_name, "tenant_id_not_null"))
        self.index = quote(op.index_name)

    # -- what the live table already has (online only: offline renders every step) ------------

    def state(self) -> tuple[bool, bool, bool]:
        """(the column exists, it is NOT NULL, the index exists and is valid)."""
        if self.offline:
            return False, False, False
        row = self.bind.execute(text(
            "SELECT a.attnotnull FROM pg_catalog.pg_attribute a "
            "WHERE a.attrelid = to_regclass(:t) AND a.attname = 'tenant_id' AND NOT a.attisdropped"
        ), {"t": self.table}).first()
        valid = self.index_valid(qualified(self.op.schema, self.op.index_name))
        return row is not None, bool(row and row[0]), valid

    # -- the steps ----------------------------------------------------------------------------

    def add_column(self) -> None:
        if self.op.source.kind == "none":  # nothing to fill rows from: no trigger either
            self.brief(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS tenant_id {self.sql_type.upper()}")
            return
        value = self.op.source.trigger_value(self.sql_type)
        self.brief(
            f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS tenant_id {self.sql_type.upper()}",
            f"CREATE OR REPLACE FUNCTION {self.function}() RETURNS trigger LANGUAGE plpgsql AS "
            "$sa_patterns$\nBEGIN\n"
            f"  -- sa_patterns: tenant_id of rows written during the adoption, from {self.op.source!r}\n"
            f"  NEW.tenant_id := {value};\n  RETURN NEW;\nEND\n$sa_patterns$",
            f"CREATE OR REPLACE TRIGGER {self.trigger} BEFORE INSERT OR UPDATE ON {self.table} "
            f"FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION {self.function}()",
        )

    def fill(self, fresh: bool) -> None:
        op = self.op
        if op.source.kind == "none":
            if not self.offline:
                self.refuse_orphans(Table(op.table_name, MetaData(), schema=op.schema, autoload_with=self.bind))
            return
        if self.offline:
            self.emit(
                f"-- sa_patterns: fill {self.table}.tenant_id from {op.source!r} in batches of "
                f"{op.batch_size} that commit (backfill {op.backfill_name!r}; online only)"
            )
            return
        live = Table(op.table_name, MetaData(), schema=op.schema, autoload_with=self.bind)
        backfill = Backfill(
            op.backfill_name, live,
            values={"tenant_id": op.source.fill_value(live, op.type_)},
            where=live.c.tenant_id.is_(None),
        )
        with all_tenants():  # a parent whose row-level security is forced: the owner reads it all
            run_backfill(self.bind, backfill, batch_size=op.batch_size, restart=fresh)
        self.refuse_orphans(live)

    def refuse_orphans(self, live: Table) -> None:
        """Rows with no tenant after the fill stop the migration while nothing is irreversible."""
        with all_tenants():
            key = list(live.primary_key.columns) or [live.c[next(iter(live.c.keys()))]]
            missing = live.c.tenant_id.is_(None)
            count = self.bind.execute(select(func.count()).select_from(live).where(missing)).scalar_one()
            if not count:
                return
            keys = self.bind.execute(select(*key).where(missing).order_by(*key).limit(5)).all()
        shown = ", ".join(str(tuple(k)) if len(k) > 1 else repr(k[0]) for k in keys)
        if self.op.source.kind == "none":
            raise BackfillError(
                f"adopting tenant_id on {self.table}: {count} row(s) have no tenant (keys "
                f"{[c.name for c in key]}: {shown}{', ...' if count > len(keys) else ''}), and the "
                "revision says none is expected (source=no_existing_rows()). Say where they come "
                "from: decorate the model with @adopt_tenants(tenant_constant(...) | "
                "tenant_column(...) | tenant_from(...)) and autogenerate again, or edit this "
                "revision's source=. tenant_id is still nullable: run the upgrade again after."
            )
        raise BackfillError(
            f"adopting tenant_id on {self.table}: {count} row(s) have no tenant after the fill "
            f"from {self.op.source.describe()} (keys {[c.name for c in key]}: {shown}"
            f"{', ...' if count > len(keys) else ''}). Nothing irreversible was done: tenant_id is "
            "still nullable and the trigger still fills new rows. Give those rows a tenant (or "
            "their missing parent), or delete them, then run the upgrade again: it resumes here."
        )

    def not_null(self) -> None:
        self.brief(
            f"ALTER TABLE {self.table} DROP CONSTRAINT IF EXISTS {self.check}",
            f"ALTER TABLE {self.table} ADD CONSTRAINT {self.check} CHECK (tenant_id IS NOT NULL) NOT VALID",
        )
        try:
            self.brief(f"ALTER TABLE {self.table} VALIDATE CONSTRAINT {self.check}")
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _CHECK_VIOLATION:
                raise
            self.refuse_orphans(Table(self.op.table_name, MetaData(), schema=self.op.schema, autoload_with=self.bind))
            raise
        self.brief(
            f"ALTER TABLE {self.table} ALTER COLUMN tenant_id SET NOT NULL",
            f"ALTER TABLE {self.table} DROP CONSTRAINT {self.check}",
        )

    def create_index(self) -> None:
        with self.unlimited_wait():
            self.emit(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {self.index} ON {self.table} (tenant_id)"
            )

    def drop_trigger_sql(self) -> list[str]:
        if self.op.source.kind == "none":  # never had one
            return []
        return [f"DROP TRIGGER IF EXISTS {self.trigger} ON {self.table}", f"DROP FUNCTION IF EXISTS {self.function}()"]


@Operations.implementation_for(AddTenantColumnOp)
def _add_tenant_column(operations: Operations, operation: AddTenantColumnOp) -> None:
    steps = _Steps(operations, operation)
    with operations.get_context().autocommit_block():
        exists, not_null, indexed = steps.state()
        if not not_null:
            steps.add_column()
            steps.fill(fresh=not exists)
            steps.not_null()
        if not indexed:
            steps.create_index()
        if not operation.keep_trigger and steps.drop_trigger_sql():
            steps.brief(*steps.drop_trigger_sql())
        steps.forget(operation.backfill_name)
    if operation.keep_trigger and operation.source.kind == "join":
        # The block released any lock the revision took before it (op.lock_tables). The trigger
        # left in place reads the parent while its writer holds this table: were the revision
        # to lock the parent next (a key on it) and then this table (a policy), each would wait
        # on the other. So this table is locked now, as its policies would lock it anyway.
        for statement in (f"SET LOCAL lock_timeout = {operation.lock_timeout.strip()!r}",
                          f"LOCK TABLE {steps.table} IN ACCESS EXCLUSIVE MODE"):
            operations.execute(DDL(statement))  # type: ignore[no-untyped-call]


@Operations.implementation_for(DropTenantFillOp)
def _drop_tenant_fill(operations: Operations, operation: DropTenantFillOp) -> None:
    steps = _Steps(operations, AddTenantColumnOp(
        operation.table_name, 0, schema=operation.schema, lock_timeout=operation.lock_timeout))
    for statement in [f"SET LOCAL lock_timeout = {steps.op.lock_timeout.strip()!r}", *steps.drop_trigger_sql()]:
        operations.execute(DDL(statement))  # type: ignore[no-untyped-call]


@Operations.implementation_for(_NothingToRestoreOp)
def _nothing(operations: Operations, operation: _NothingToRestoreOp) -> None:
    return None


@Operations.implementation_for(DropTenantColumnOp)
def _drop_tenant_column(operations: Operations, operation: DropTenantColumnOp) -> None:
    steps = _Steps(operations, operation.added)
    with operations.get_context().autocommit_block():
        if steps.drop_trigger_sql():
            steps.brief(*steps.drop_trigger_sql())
        with steps.unlimited_wait():
            steps.emit(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(operation.added.schema, operation.added.index_name)}")
        steps.brief(f"ALTER TABLE {steps.table} DROP COLUMN IF EXISTS tenant_id")


# -- rendering (a revision that holds the operation, and its reverse in the downgrade) ---------


def _call(autogen_context: AutogenContext, name: str, op: AddTenantColumnOp, *, fill: bool) -> str:
    kind = op.source.kind
    names = ["no_existing_rows"] if kind == "none" else ["tenant_column", "tenant_constant", "tenant_from"]
    autogen_context.imports.add(f"from sa_patterns.tenancy.adopt import {', '.join(names)}")
    args = [repr(op.table_name), f"source={op.source!r}"]
    if op.schema:
        args.append(f"schema={op.schema!r}")
    if type(op.type_) is not BigInteger:
        autogen_context.imports.add("import sqlalchemy as sa")
        args.append(f"type_=sa.{op.type_!r}")
    if op.index_name != f"ix_{op.table_name}_tenant_id":
        args.append(f"index_name={op.index_name!r}")
    if fill and op.batch_size != 1000:
        args.append(f"batch_size={op.batch_size}")
    if op.lock_timeout != "2s":
        args.append(f"lock_timeout={op.lock_timeout!r}")
    if fill and op.keep_trigger:
        args.append("keep_trigger=True")
    return f"op.{name}({', '.join(args)})"


@renderers.dispatch_for(AddTenantColumnOp)
def _render_add(autogen_context: AutogenContext, op: AddTenantColumnOp) -> str:
    return _call(autogen_context, "add_tenant_column", op, fill=True)


@renderers.dispatch_for(DropTenantColumnOp)
def _render_drop(autogen_context: AutogenContext, op: DropTenantColumnOp) -> str:
    return _call(autogen_context, "drop_tenant_column", op.added, fill=False)


@renderers.dispatch_for(DropTenantFillOp)
def _render_drop_fill(autogen_context: AutogenContext, op: DropTenantFillOp) -> str:
    schema = f", schema={op.schema!r}" if op.schema else ""
    return f"op.drop_tenant_fill({op.table_name!r}{schema})"


@renderers.dispatch_for(_NothingToRestoreOp)
def _render_nothing(autogen_context: AutogenContext, op: _NothingToRestoreOp) -> str:
    return f"# (the trigger that filled {op.table_name}.tenant_id during the upgrade: nothing to restore)"


# -- autogenerate: a model decorated with @adopt_tenants ---------------------------------------


@run_last
def _adopt_tenant_columns(autogen_context: AutogenContext, upgrade_ops: Any, schemas: Any) -> PriorityDispatchResult:
    """``ADD COLUMN tenant_id ... NOT NULL`` and its index, on a ``TenantMixin`` table that
    exists, become ``op.add_tenant_column`` first in the revision (it commits what precedes it,
    so it must precede any lock the revision takes), with ``op.drop_tenant_fill`` last when the
    model says where its rows' tenants come from
    (:func:`~sa_patterns.tenancy.adopt.adopt_tenants`); without that, the source is
    :func:`~sa_patterns.tenancy.adopt.no_existing_rows`: rows without a tenant stop the upgrade
    with what to write."""
    tables = metadata_tables(autogen_context)
    first: list[MigrateOperation] = []
    last: list[MigrateOperation] = []
    for container in upgrade_ops.ops:
        if not isinstance(container, alembic_ops.ModifyTableOps):
            continue
        table = tables.get((container.schema or "", container.table_name))
        declared = None if table is None else adoption_of(table)
        add = next((o for o in container.ops if isinstance(o, alembic_ops.AddColumnOp)
                    and o.column.name == "tenant_id"), None)
        if add is None or table is None or not is_tenant_table(table):
            continue
        # no decorator: the table exists, so say so online, and refuse rows without a tenant
        declared = declared or (no_existing_rows(), {"keep_trigger": False})
        index = next((o for o in container.ops if isinstance(o, alembic_ops.CreateIndexOp)
                      and [getattr(c, "name", c) for c in o.columns] == ["tenant_id"]), None)
        container.ops = [o for o in container.ops if o is not add and o is not index]
        source, options = declared
        options.setdefault("keep_trigger", True)
        first.append(AddTenantColumnOp(
            container.table_name, source, schema=container.schema, type_=add.column.type,
            index_name=None if index is None else str(index.index_name), **options,
        ))
        if options["keep_trigger"]:
            last.append(DropTenantFillOp(container.table_name, container.schema,
                                         options.get("lock_timeout", "2s")))
    if first:
        upgrade_ops.ops[:] = [*first, *(o for o in upgrade_ops.ops if not (
            isinstance(o, alembic_ops.ModifyTableOps) and not o.ops)), *last]
    return PriorityDispatchResult.CONTINUE
