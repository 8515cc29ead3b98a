"""Views and partitioning adopted over tables that have rows and writers.

**Materialized views.** ``CREATE MATERIALIZED VIEW ... WITH DATA`` runs its query under ACCESS
SHARE on the tables it reads: writers go on, however long it takes. Its unique index is built
on the new view, which nobody can read before the revision commits, so it is built in the
transaction. What stalls writers is a lock the same transaction holds on a table that exists while the view
is populated (the refresh policy a view over a row-level-security table needs: ``CREATE
POLICY`` takes ACCESS EXCLUSIVE until the commit). In a transaction that locks a table that
exists, autogenerate writes, for each new materialized view over tables that exist (a rebuilt
one keeps its place: its readers wait on its ``DROP`` until the commit anyway),
``op.create_materialized_view_empty(...)`` (``WITH NO DATA``: instant) and, after the revision's
transaction, ``op.populate_materialized_view(name)``: its refresh function (or ``REFRESH``) in an
autocommit block, under ACCESS SHARE on the tables read. Until then the view is unpopulated
(a read of it fails), which only the new code, deployed after the migration, does.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack, suppress
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from alembic.operations import ops as alembic_ops
from alembic.util import PriorityDispatchResult
from sqlalchemy import DDL, MetaData, Table, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.util import find_tables

from ..errors import BackfillError, ConfigurationError, DowngradeRefused
from ..schema.objects import Entity, MaterializedView, ident, qualified, quote, quote_literal
from .online_steps import OnlineSteps, run_last
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
    block = ExitStack()
    # in the caller's own transaction (a program running the operations in it, not Alembic's)
    # Alembic refuses the block (an AssertionError; under python -O the AttributeError of the
    # commit it then tries on no transaction): the view is filled in that transaction, as WITH
    # DATA would have
    with suppress(AssertionError, AttributeError):
        block.enter_context(operations.get_context().autocommit_block())
    with block:
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


@run_last
def _populate_after_commit(autogen_context: AutogenContext, upgrade_ops: Any, schemas: Any) -> PriorityDispatchResult:
    """In a transaction that locks a table that exists (a refresh policy on a table the view
    reads, a column added anywhere), a materialized view over tables that exist is created empty
    and populated after the transaction: its query would otherwise run while those locks are
    held."""
    from ..views import _MATVIEWS_KEY, _SELECTS_KEY, refresh_function_name

    _partition_existing_tables(autogen_context, upgrade_ops, schemas)
    created = {(o.schema or "", o.table_name) for o in upgrade_ops.ops if isinstance(o, alembic_ops.CreateTableOp)}
    if not _locked(upgrade_ops) - created:
        return PriorityDispatchResult.CONTINUE
    populate: list[MigrateOperation] = []
    # a rebuilt view's readers wait on its DROP until the commit anyway: only new views move
    rebuilt = {(getattr(o.entity, "schema", None) or "", getattr(o.entity, "name", "")) for o in upgrade_ops.ops
               if isinstance(o, DropEntityOp | ReplaceEntityOp)}
    for md in _metadatas(autogen_context):
        for key, (schema, storage) in md.info.get(_MATVIEWS_KEY, {}).items():
            select = md.info.get(_SELECTS_KEY, {}).get(key)
            reads = {(t.schema or "", t.name) for t in find_tables(select) if isinstance(t, Table)}
            if select is None or not reads - created:
                continue  # a view over new tables: empty, nobody waits on its population
            for i, op in enumerate(upgrade_ops.ops):
                entity = getattr(op, "entity", None)
                if (isinstance(op, CreateEntityOp) and isinstance(entity, MaterializedView) and entity.with_data
                        and (entity.schema or "", entity.name) == (schema or "", storage)
                        and (schema or "", storage) not in rebuilt):
                    upgrade_ops.ops[i] = CreateMaterializedViewEmptyOp(entity)
                    populate.append(PopulateMaterializedViewOp(storage, schema, refresh_function_name(storage)))
    upgrade_ops.ops.extend(populate)
    return PriorityDispatchResult.CONTINUE


# -- partitioning a table that has rows ----------------------------------------------------------

_CHECK_VIOLATION = "23514"
_CMD = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}


@Operations.register_operation("partition_existing_table")
class PartitionExistingTableOp(MigrateOperation):
    """Make a plain table with rows range-partitioned without copying it: the table becomes the
    partition of the current period and everything before it (see :class:`_PartitionSteps`)."""

    def __init__(
        self,
        table_name: str,
        column: str,
        *,
        interval: str = "month",
        primary_key: Sequence[str] = (),
        schema: str | None = None,
        lock_timeout: str = "2s",
        retries: int = 10,
    ) -> None:
        from ..partitioning import _SUFFIX

        if interval not in _SUFFIX:
            raise ConfigurationError(f"partition_existing_table(interval={interval!r}): use one of {sorted(_SUFFIX)}.")
        if primary_key and column not in primary_key:
            raise ConfigurationError(
                f"partition_existing_table({table_name!r}): the primary key {list(primary_key)} must include the "
                f"partition column {column!r} (PostgreSQL enforces keys per partition)."
            )
        self.table_name, self.column, self.interval, self.schema = table_name, column, interval, schema
        self.primary_key = tuple(primary_key)
        self.lock_timeout, self.retries = lock_timeout, retries

    @classmethod
    def partition_existing_table(
        cls,
        operations: Operations,
        table_name: str,
        column: str,
        *,
        interval: str = "month",
        primary_key: Sequence[str] = (),
        schema: str | None = None,
        lock_timeout: str = "2s",
        retries: int = 10,
    ) -> None:
        """Range-partition ``table_name`` by ``column`` (periods of ``interval``, as
        ``range_partition`` declares) with the rows it holds: first in the revision, before the
        maintenance function that makes the next partitions. ``primary_key``: the model's
        (it includes ``column``); empty keeps the table's."""
        operations.invoke(cls(
            table_name, column, interval=interval, primary_key=primary_key, schema=schema,
            lock_timeout=lock_timeout, retries=retries,
        ))

    def reverse(self) -> RefusePartitionDowngradeOp:
        return RefusePartitionDowngradeOp(self.table_name, schema=self.schema)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("partition_existing_table", self.schema, self.table_name, self.column)


@Operations.register_operation("refuse_partition_downgrade")
class RefusePartitionDowngradeOp(MigrateOperation):
    """The downgrade of :class:`PartitionExistingTableOp`: refused (:class:`DowngradeRefused`)."""

    def __init__(self, table_name: str, *, schema: str | None = None) -> None:
        self.table_name, self.schema = table_name, schema

    @classmethod
    def refuse_partition_downgrade(cls, operations: Operations, table_name: str, *, schema: str | None = None) -> None:
        """Stop the downgrade before anything is done, saying why."""
        operations.invoke(cls(table_name, schema=schema))

    def reverse(self) -> MigrateOperation:
        raise NotImplementedError("the reverse of a refusal is the partitioning it refused to undo")

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("refuse_partition_downgrade", self.schema, self.table_name)


class _PartitionSteps(OnlineSteps):
    """The steps of one ``partition_existing_table``, outside the migration's transaction:

    1. the period's bound ``B`` (the start of the next period, UTC, by the maintenance clock);
    2. ``CHECK (col IS NOT NULL AND col < B) NOT VALID`` (brief), then ``VALIDATE`` (a scan
       under SHARE UPDATE EXCLUSIVE: reads and writes go on); a row outside stops here, named,
       before anything irreversible;
    3. a primary key that lacks the partition column: a unique index over the new key built
       ``CONCURRENTLY``, which becomes the table's primary key in the swap (the old one dropped);
    4. one brief transaction under ``lock_timeout`` (retried): the table renamed to its
       partition's name (``<table>_p<period>``, so the maintenance function takes it for the
       current period's), its key, indexes and triggers renamed or moved, the partitioned table
       created under the old name (``LIKE``: columns, defaults, checks, comments), its key,
       indexes, foreign keys, triggers, grants, row-level security and policies copied, the
       sequences owned by it, then ``ATTACH PARTITION ... FOR VALUES FROM (MINVALUE) TO (B)``:
       no scan (the valid check proves the bound), the indexes attached, not built.
    """

    def __init__(self, operations: Operations, op: PartitionExistingTableOp) -> None:
        super().__init__(operations, f"partitioning {qualified(op.schema, op.table_name)}",
                         lock_timeout=op.lock_timeout, retries=op.retries)
        self.op = op
        self.table = qualified(op.schema, op.table_name)
        self.check = quote(ident(op.table_name, "partition_bound"))
        self.col = quote(op.column)

    def regclass(self, name: str) -> Any:
        return self.bind.execute(text("SELECT to_regclass(:n)::oid"), {"n": qualified(self.op.schema, name)}).scalar()

    def partitioned(self) -> bool:
        return bool(self.bind.execute(text(
            "SELECT relkind = 'p' FROM pg_catalog.pg_class WHERE oid = to_regclass(:t)"), {"t": self.table}).scalar())

    def bound(self) -> tuple[str, str]:
        """The current period's partition name and the next period's start, as a literal."""
        from ..partitioning import _SUFFIX, CLOCK, _bound_expr, partition_prefix

        unit, fmt = self.op.interval, _SUFFIX[self.op.interval]
        live = Table(self.op.table_name, MetaData(), schema=self.op.schema, autoload_with=self.bind)
        if self.op.column not in live.c:
            raise ConfigurationError(f"{self.what}: {self.op.column!r} is not a column of {self.table}.")
        upper = _bound_expr(live, self.op.column).format(v=f"(lo + interval '1 {unit}')")
        suffix, literal = self.bind.execute(text(
            f"SELECT to_char(lo, '{fmt}'), {upper} FROM "  # noqa: S608  (validated unit, format)
            f"(SELECT date_trunc('{unit}', {CLOCK} AT TIME ZONE 'UTC') AS lo) s"
        )).one()
        return f"{partition_prefix(self.op.table_name)}_p{suffix}", str(literal)

    def checked(self, literal: str) -> None:
        bound = f"{self.col} IS NOT NULL AND {self.col} < {quote_literal(literal)}"
        self.brief(
            f"ALTER TABLE {self.table} DROP CONSTRAINT IF EXISTS {self.check}",
            f"ALTER TABLE {self.table} ADD CONSTRAINT {self.check} CHECK ({bound}) NOT VALID",
        )
        try:
            self.brief(f"ALTER TABLE {self.table} VALIDATE CONSTRAINT {self.check}")
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _CHECK_VIOLATION:
                raise
            outside = self.bind.execute(text(
                f"SELECT count(*) FROM {self.table} WHERE NOT ({bound})")).scalar_one()  # noqa: S608
            self.brief(f"ALTER TABLE {self.table} DROP CONSTRAINT IF EXISTS {self.check}")
            raise BackfillError(
                f"{self.what}: {outside} row(s) have {self.op.column} NULL or at or after {literal}, the "
                "end of the current period: the table becomes the partition of everything up to it, so "
                "they have no partition. Nothing was changed. Fix those rows (or wait for the period "
                "they fall in), then run the upgrade again."
            ) from exc

    def key_index(self) -> str | None:
        """A unique index over the new primary key when the table's own lacks the partition
        column (built CONCURRENTLY); None when the table's key will do."""
        wanted = list(self.op.primary_key)
        current = list(self.bind.scalars(text(
            "SELECT a.attname FROM pg_catalog.pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(n, o) "
            "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n "
            "WHERE i.indrelid = to_regclass(:t) AND i.indisprimary ORDER BY k.o"), {"t": self.table}))
        if not wanted or self.op.column in current:
            return None
        name = ident(self.op.table_name, "partition_key")
        index = qualified(self.op.schema, name)
        if not self.index_valid(index):
            with self.unlimited_wait():
                self.emit(f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {quote(name)} ON {self.table} "
                          f"({', '.join(quote(c) for c in wanted)})")
        return name

    def swap_sql(self, partition: str, literal: str, key_index: str | None) -> list[str]:
        """The statements of the brief swap, read from the catalog before it (the catalog does
        not change under the table's lock: DDL on it waits)."""
        op, bind = self.op, self.bind
        oid = self.regclass(op.table_name)
        dependents = list(bind.scalars(text(
            "SELECT DISTINCT c.oid::regclass::text FROM pg_catalog.pg_depend d "
            "JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid JOIN pg_catalog.pg_class c ON c.oid = r.ev_class "
            "WHERE d.refobjid = :o AND d.classid = 'pg_rewrite'::regclass AND c.oid <> :o "
            "UNION SELECT conname || ' on ' || conrelid::regclass::text FROM pg_catalog.pg_constraint "
            "WHERE confrelid = :o AND contype = 'f' AND conrelid <> :o"), {"o": oid}))
        if dependents:
            raise ConfigurationError(
                f"{self.what}: {', '.join(sorted(dependents))} depend(s) on it (a view, a foreign key "
                "to it): they would follow the old table, now one partition. Drop them in a revision "
                "before this one and create them again after it."
            )
        identity = list(bind.scalars(text(
            "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = :o AND attidentity <> '' "
            "AND NOT attisdropped"), {"o": oid}))
        if identity:
            raise ConfigurationError(
                f"{self.what}: identity column(s) {identity} are not supported (the partitioned table "
                "would start a new sequence); use a serial column or partition a copy."
            )
        part = qualified(op.schema, partition)
        t, p = self.table, quote(partition)
        out = [f"LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE"]
        # the table's own key, indexes and triggers step aside under new names
        pkey = bind.execute(text(
            "SELECT conname, array_agg(a.attname ORDER BY k.o) FROM pg_catalog.pg_constraint c "
            "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY k(n, o) JOIN pg_catalog.pg_attribute a "
            "ON a.attrelid = c.conrelid AND a.attnum = k.n WHERE c.conrelid = :o AND c.contype = 'p' "
            "GROUP BY conname"), {"o": oid}).first()
        key_cols = list(op.primary_key) or (list(pkey[1]) if pkey else [])
        indexes = bind.execute(text(
            "SELECT ci.relname, pg_catalog.pg_get_indexdef(i.indexrelid), i.indisunique, "
            "EXISTS (SELECT FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = :o) "
            "FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid "
            "WHERE i.indrelid = :o ORDER BY 1"), {"o": oid}).all()
        triggers = bind.execute(text(
            "SELECT tgname, pg_catalog.pg_get_triggerdef(oid), obj_description(oid, 'pg_trigger') "
            "FROM pg_catalog.pg_trigger WHERE tgrelid = :o AND NOT tgisinternal ORDER BY 1"), {"o": oid}).all()
        for name, _, _ in triggers:
            out.append(f"DROP TRIGGER {quote(name)} ON {t}")
        for name, _, _, constraint in indexes:
            if not constraint and name != key_index:
                out.append(f"ALTER INDEX {qualified(op.schema, name)} RENAME TO {quote(ident(partition, name))}")
        for column in key_cols:
            out.append(f"ALTER TABLE {t} ALTER COLUMN {quote(column)} SET NOT NULL")  # the valid check: no scan
        if key_index is not None:
            # the partition's key must be the parent's (PostgreSQL 18 clones a primary key onto a
            # partition that has another): the old one goes, the index built over the new one
            # becomes it (no scan: its columns are NOT NULL)
            if pkey is not None:
                out.append(f"ALTER TABLE {t} DROP CONSTRAINT {quote(pkey[0])}")
            out.append(f"ALTER TABLE {t} ADD CONSTRAINT {quote(ident(partition, 'pkey'))} "
                       f"PRIMARY KEY USING INDEX {quote(key_index)}")
        elif pkey is not None:
            out.append(f"ALTER TABLE {t} RENAME CONSTRAINT {quote(pkey[0])} TO {quote(ident(partition, 'pkey'))}")
        out.append(f"ALTER TABLE {t} RENAME TO {p}")
        # the partitioned table under the old name
        out.append(
            f"CREATE TABLE {t} (LIKE {part} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS "
            f"INCLUDING STORAGE INCLUDING GENERATED) PARTITION BY RANGE ({self.col})"
        )
        out.append(f"ALTER TABLE {t} DROP CONSTRAINT {self.check}")
        if key_cols:
            out.append(f"ALTER TABLE {t} ADD CONSTRAINT {quote(pkey[0] if pkey else ident(op.table_name, 'pkey'))} "
                       f"PRIMARY KEY ({', '.join(quote(c) for c in key_cols)})")
        for name, definition, unique, constraint in indexes:
            if constraint or name == key_index or (unique and op.column not in definition):
                continue  # the key, or a unique index PostgreSQL cannot keep across partitions
            body = definition.split(" USING ", 1)[1]
            out.append(f"CREATE {'UNIQUE ' if unique else ''}INDEX {quote(name)} ON {t} USING {body}")
        for name, definition in bind.execute(text(
            "SELECT conname, pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint "
            "WHERE conrelid = :o AND contype = 'f' ORDER BY 1"), {"o": oid}):
            out.append(f"ALTER TABLE {t} ADD CONSTRAINT {quote(name)} {definition}")
        comment = bind.execute(text("SELECT obj_description(:o, 'pg_class')"), {"o": oid}).scalar()
        if comment is not None:
            out.append(f"COMMENT ON TABLE {t} IS {quote_literal(comment)}")
        for sequence, column in bind.execute(text(
            "SELECT s.oid::regclass::text, a.attname FROM pg_catalog.pg_depend d "
            "JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
            "JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
            "WHERE d.refobjid = :o AND d.deptype = 'a'"), {"o": oid}):
            out.append(f"ALTER SEQUENCE {sequence} OWNED BY {t}.{quote(column)}")
        for grantee, privileges in bind.execute(text(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END, "
            "string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type) "
            "FROM pg_catalog.pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
            "LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee "
            "WHERE c.oid = :o AND a.grantee <> c.relowner GROUP BY 1 ORDER BY 1"), {"o": oid}):
            out.append(f"GRANT {privileges} ON {t} TO {grantee}")
        rls, force = bind.execute(text(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_catalog.pg_class WHERE oid = :o"), {"o": oid}).one()
        if rls:
            out.append(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY")
        if force:
            out.append(f"ALTER TABLE {t} FORCE ROW LEVEL SECURITY")
        for name, permissive, cmd, roles, qual, check, note in bind.execute(text(
            "SELECT p.polname, p.polpermissive, p.polcmd, "
            "(SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(r::regrole::text) END, ', ') "
            " FROM unnest(p.polroles) r), pg_catalog.pg_get_expr(p.polqual, p.polrelid), "
            "pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), obj_description(p.oid, 'pg_policy') "
            "FROM pg_catalog.pg_policy p WHERE p.polrelid = :o ORDER BY 1"), {"o": oid}):
            sql = (f"CREATE POLICY {quote(name)} ON {t} AS {'PERMISSIVE' if permissive else 'RESTRICTIVE'} "
                   f"FOR {_CMD[cmd]} TO {roles}")
            sql += f" USING ({qual})" if qual is not None else ""
            sql += f" WITH CHECK ({check})" if check is not None else ""
            out.append(sql)
            if note is not None:
                out.append(f"COMMENT ON POLICY {quote(name)} ON {t} IS {quote_literal(note)}")
        # row triggers are cloned onto the partition by the attach; statement triggers fire on it
        for name, definition, note in triggers:
            out.append(definition)  # read before the rename: its table's name is now the parent's
            if note is not None:
                out.append(f"COMMENT ON TRIGGER {quote(name)} ON {t} IS {quote_literal(note)}")
        out.append(f"ALTER TABLE {t} ATTACH PARTITION {part} FOR VALUES FROM (MINVALUE) TO ({quote_literal(literal)})")
        out.append(f"ALTER TABLE {part} DROP CONSTRAINT {self.check}")
        return out


@Operations.implementation_for(PartitionExistingTableOp)
def _partition_existing(operations: Operations, operation: PartitionExistingTableOp) -> None:
    steps = _PartitionSteps(operations, operation)
    with operations.get_context().autocommit_block():
        if steps.offline:
            steps.emit(f"-- sa_patterns: {steps.table} becomes the partition of the current period and before "
                       f"(CHECK ({steps.col} < the next period) NOT VALID, VALIDATE, a unique index over the key "
                       "CONCURRENTLY, then one brief swap: rename, CREATE TABLE ... PARTITION BY RANGE, "
                       "ATTACH PARTITION; online only: it reads the catalog)")
            return
        if steps.partitioned():
            return  # done before (an upgrade run again)
        partition, literal = steps.bound()
        steps.checked(literal)
        key_index = steps.key_index()
        steps.brief(*steps.swap_sql(partition, literal, key_index))


@Operations.implementation_for(RefusePartitionDowngradeOp)
def _refuse_downgrade(operations: Operations, operation: RefusePartitionDowngradeOp) -> None:
    table = qualified(operation.schema, operation.table_name)
    raise DowngradeRefused(
        f"downgrading the partitioning of {table} is refused: a partitioned table cannot become a plain "
        "one in place, and a copy of every row (a new table filled in batches, kept in step by a "
        "trigger, then swapped) is a migration of its own to plan, not an automatic downgrade. Nothing "
        "was changed. Keep the table partitioned, or write that copy in a revision of its own."
    )


@renderers.dispatch_for(PartitionExistingTableOp)
def _render_partition(autogen_context: AutogenContext, op: PartitionExistingTableOp) -> str:
    args = [repr(op.table_name), repr(op.column), f"interval={op.interval!r}"]
    if op.primary_key:
        args.append(f"primary_key={list(op.primary_key)!r}")
    if op.schema:
        args.append(f"schema={op.schema!r}")
    if op.lock_timeout != "2s":
        args.append(f"lock_timeout={op.lock_timeout!r}")
    return f"op.partition_existing_table({', '.join(args)})"


@renderers.dispatch_for(RefusePartitionDowngradeOp)
def _render_refuse(autogen_context: AutogenContext, op: RefusePartitionDowngradeOp) -> str:
    schema = f", schema={op.schema!r}" if op.schema else ""
    return f"op.refuse_partition_downgrade({op.table_name!r}{schema})"


def _partition_existing_tables(autogen_context: AutogenContext, upgrade_ops: Any, schemas: Any) -> None:
    """A model whose table exists, plain, and now declares ``__partition_by__``: the table is
    partitioned in place first in the revision (the maintenance function, which autogenerate
    writes after it, makes the next partitions)."""
    from ..partitioning import partition_specs

    connection = autogen_context.connection
    if connection is None:
        return
    first: list[MigrateOperation] = []
    for md in _metadatas(autogen_context):
        specs = partition_specs(md)
        for key, spec in specs.items():
            table = md.tables[key]
            kind = connection.execute(text(
                "SELECT relkind FROM pg_catalog.pg_class WHERE oid = to_regclass(:t)"),
                {"t": qualified(table.schema, table.name)}).scalar()
            if kind != "r":
                continue  # new (Alembic creates it partitioned), or partitioned already
            if spec.strategy != "range" or spec.interval is None:
                raise ConfigurationError(
                    f"{table.name} exists and now declares {spec.strategy} partitioning: only range "
                    "partitioning can adopt a table with rows in place (the table becomes the partition "
                    "of everything up to the current period). Partition a copy instead."
                )
            first.append(PartitionExistingTableOp(
                table.name, spec.columns[0], interval=spec.interval, schema=table.schema,
                primary_key=[c.name for c in table.primary_key.columns],
            ))
    upgrade_ops.ops[:0] = first
