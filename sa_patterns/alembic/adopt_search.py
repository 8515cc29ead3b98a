"""``op.add_search_vector``: ``Searchable``'s ``search_vector`` added to a table that has rows
and writers, without stalling them; ``op.change_search_vector`` changes what it computes later,
``op.drop_search_vector`` is the downgrade.

PostgreSQL cannot add a ``GENERATED ALWAYS AS (...) STORED`` column, nor turn a plain column into
one, without rewriting the table under ACCESS EXCLUSIVE. So on a table that exists, the vector is
a plain ``tsvector`` column kept by a ``BEFORE INSERT OR UPDATE OF <read columns>`` trigger whose
function computes the very expression the generated column would
(:func:`sa_patterns.search.search_vector_sql`). For the application nothing differs: the model
still declares the generated column, so the ORM never writes it and fetches it after a flush.
That trigger-kept column is the table's permanent form: autogenerate and ``sa-patterns doctor``
accept it as the model's vector while the trigger computes the model's expression.

Autogenerate writes the operation itself when ``Searchable`` is added to a model whose table
exists (a table created in the same revision keeps the generated column: it is empty). It runs,
outside the migration's transaction:

1. ``ADD COLUMN IF NOT EXISTS search_vector tsvector`` (nullable, no default: no rewrite), the
   function and the trigger: one short transaction under ``SET LOCAL lock_timeout``, retried;
2. the fill of the existing rows: a resumable backfill named ``<table>.search_vector``
   (:mod:`sa_patterns.backfill`), batches that commit, each row locked only by its batch;
3. its record forgotten. The GIN index autogenerate writes beside it is built ``CONCURRENTLY``
   at the end of the revision (:mod:`sa_patterns.alembic.online_plan`), after the fill: one
   build over filled rows instead of one GIN insertion per updated row.

Every step is idempotent, so an interrupted upgrade is run again and resumes. Offline (``--sql``,
the linter) the steps render as the SQL they run; the fill renders as a comment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from alembic.operations import ops as alembic_ops
from alembic.util import PriorityDispatchResult
from sqlalchemy import MetaData, Table, literal_column
from sqlalchemy.dialects.postgresql import TSVECTOR

from ..backfill import Backfill, run_backfill
from ..errors import ConfigurationError
from ..schema.objects import Function, ident, qualified, quote
from ..search import (
    SEARCH_INFO,
    SEARCH_VECTOR,
    kept_vector,
    kept_vector_function,
    search_vector_sql,
)
from .online_steps import OnlineSteps, check_lock_timeout, run_last
from .ops import ReplaceEntityOp

__all__ = ["AddSearchVectorOp", "ChangeSearchVectorOp", "DropSearchVectorOp"]

Weights = Mapping[str, str]
_DOLLAR = "$sa_patterns$"


class _Vector:
    """What a kept vector computes: ``(column, weight)`` pairs, the configuration, and the
    ``regconfig`` column that overrides it per row."""

    def __init__(self, weights: Weights | Sequence[tuple[str, str]], config: str, config_column: str | None) -> None:
        pairs = list(weights.items()) if isinstance(weights, Mapping) else list(weights)
        self.weights = tuple((str(c), str(w).upper()) for c, w in pairs)
        self.config, self.config_column = config, config_column
        if not self.weights or any(w not in ("A", "B", "C", "D") for _, w in self.weights):
            raise ConfigurationError(
                f"search vector weights {dict(self.weights)!r}: give at least one column, each with "
                "weight 'A', 'B', 'C' or 'D' ({'title': 'A', 'body': 'B'})."
            )
        if _DOLLAR in self.function():
            raise ConfigurationError(f"search vector columns {dict(self.weights)!r}: a name holds {_DOLLAR}.")

    @property
    def reads(self) -> list[str]:
        return [*([self.config_column] if self.config_column else []), *(c for c, _ in self.weights)]

    def expression(self) -> str:
        return search_vector_sql(self.weights, self.config, self.config_column)

    def function(self) -> str:
        return kept_vector_function(self.weights, self.config, self.config_column)

    def args(self, prefix: str = "") -> list[str]:
        """Its keyword arguments as rendered in a revision (defaults left out)."""
        args = [repr(dict(self.weights))] if not prefix else [f"{prefix}={dict(self.weights)!r}"]
        if self.config != "english":
            args.append(f"{prefix or ''}{'_' if prefix else ''}config={self.config!r}")
        if self.config_column:
            args.append(f"{prefix or ''}{'_' if prefix else ''}config_column={self.config_column!r}")
        return args

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Vector) and (self.weights, self.config, self.config_column) == (
            other.weights, other.config, other.config_column)

    def __hash__(self) -> int:
        return hash((self.weights, self.config, self.config_column))

    def __repr__(self) -> str:
        return f"{dict(self.weights)!r} ({self.config}{', ' + self.config_column if self.config_column else ''})"


@Operations.register_operation("add_search_vector")
class AddSearchVectorOp(MigrateOperation):
    """Add a trigger-kept ``search_vector`` to a populated table and fill it without stalling
    its writers (the module docstring gives the steps and their locks)."""

    def __init__(
        self,
        table_name: str,
        weights: Weights | Sequence[tuple[str, str]],
        *,
        config: str = "english",
        config_column: str | None = None,
        schema: str | None = None,
        index_name: str | None = None,
        batch_size: int = 1000,
        lock_timeout: str = "2s",
        retries: int = 10,
        fill: bool = True,
    ) -> None:
        check_lock_timeout("add_search_vector", lock_timeout)
        self.fill = fill
        self.table_name, self.schema = table_name, schema
        self.vector = _Vector(weights, config, config_column)
        self.index_name = index_name or ident(f"ix_{table_name}", SEARCH_VECTOR)
        self.batch_size, self.lock_timeout, self.retries = batch_size, lock_timeout, retries

    @classmethod
    def add_search_vector(
        cls,
        operations: Operations,
        table_name: str,
        weights: Weights,
        *,
        config: str = "english",
        config_column: str | None = None,
        schema: str | None = None,
        index_name: str | None = None,
        batch_size: int = 1000,
        lock_timeout: str = "2s",
        retries: int = 10,
        fill: bool = True,
    ) -> None:
        """``weights``: the model's ``__searchable__`` by column name (``{"title": "A"}``),
        ``config`` its ``__search_config__``, ``config_column`` its ``__search_config_column__``.
        ``index_name`` is the GIN index the downgrade drops (autogenerate's build of it runs
        ``CONCURRENTLY`` after this operation). ``lock_timeout`` bounds each brief lock step,
        retried ``retries`` times. ``fill=False`` leaves the existing rows to a later
        ``op.fill_search_vector`` (a ``Versioned`` table's history is brought up to date in
        between, so the fill opens no version)."""
        operations.invoke(cls(
            table_name, weights, config=config, config_column=config_column, schema=schema,
            index_name=index_name, batch_size=batch_size, lock_timeout=lock_timeout, retries=retries, fill=fill,
        ))

    def reverse(self) -> DropSearchVectorOp:
        return DropSearchVectorOp(self)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_search_vector", self.schema, self.table_name, repr(self.vector))


@Operations.register_operation("drop_search_vector")
class DropSearchVectorOp(MigrateOperation):
    """The downgrade of :class:`AddSearchVectorOp`: the GIN index dropped ``CONCURRENTLY``, then
    the trigger, its function and the column in one brief transaction (no rewrite)."""

    def __init__(self, added: AddSearchVectorOp) -> None:
        self.added = added

    @classmethod
    def drop_search_vector(cls, operations: Operations, table_name: str, weights: Weights, **kw: Any) -> None:
        """The same arguments as the ``add_search_vector`` call it undoes."""
        operations.invoke(cls(AddSearchVectorOp(table_name, weights, **kw)))

    def reverse(self) -> AddSearchVectorOp:
        return self.added

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_search_vector", self.added.schema, self.added.table_name)


@Operations.register_operation("fill_search_vector")
class FillSearchVectorOp(MigrateOperation):
    """The existing rows' vectors of an ``add_search_vector(..., fill=False)``: a resumable
    backfill of the rows still NULL, outside the migration's transaction."""

    def __init__(self, added: AddSearchVectorOp) -> None:
        self.added = added

    @classmethod
    def fill_search_vector(cls, operations: Operations, table_name: str, weights: Weights, **kw: Any) -> None:
        """The same arguments as the ``add_search_vector`` call whose fill it runs."""
        operations.invoke(cls(AddSearchVectorOp(table_name, weights, **kw)))

    def reverse(self) -> _NothingToRestoreOp:
        return _NothingToRestoreOp(self.added.table_name, filled=True)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("fill_search_vector", self.added.schema, self.added.table_name)


@Operations.register_operation("change_search_vector")
class ChangeSearchVectorOp(MigrateOperation):
    """A trigger-kept ``search_vector`` made to compute ``weights`` (with ``config``,
    ``config_column``): the function and trigger replaced in one brief transaction, then every
    row whose vector differs refilled in committing batches. Also the repair of a trigger that
    was dropped, disabled or edited (``previous`` unknown: its downgrade does nothing)."""

    def __init__(
        self,
        table_name: str,
        weights: Weights | Sequence[tuple[str, str]],
        *,
        config: str = "english",
        config_column: str | None = None,
        previous: Weights | Sequence[tuple[str, str]] | None = None,
        previous_config: str = "english",
        previous_config_column: str | None = None,
        schema: str | None = None,
        batch_size: int = 1000,
        lock_timeout: str = "2s",
        retries: int = 10,
    ) -> None:
        check_lock_timeout("change_search_vector", lock_timeout)
        self.table_name, self.schema = table_name, schema
        self.vector = _Vector(weights, config, config_column)
        self.previous = None if previous is None else _Vector(previous, previous_config, previous_config_column)
        self.batch_size, self.lock_timeout, self.retries = batch_size, lock_timeout, retries

    @classmethod
    def change_search_vector(
        cls,
        operations: Operations,
        table_name: str,
        weights: Weights,
        *,
        config: str = "english",
        config_column: str | None = None,
        previous: Weights | None = None,
        previous_config: str = "english",
        previous_config_column: str | None = None,
        schema: str | None = None,
        batch_size: int = 1000,
        lock_timeout: str = "2s",
        retries: int = 10,
    ) -> None:
        """``previous*``: what the vector computed before (the downgrade computes it again)."""
        operations.invoke(cls(
            table_name, weights, config=config, config_column=config_column, previous=previous,
            previous_config=previous_config, previous_config_column=previous_config_column, schema=schema,
            batch_size=batch_size, lock_timeout=lock_timeout, retries=retries,
        ))

    def reverse(self) -> MigrateOperation:
        if self.previous is None:
            return _NothingToRestoreOp(self.table_name)
        return ChangeSearchVectorOp(
            self.table_name, self.previous.weights, config=self.previous.config,
            config_column=self.previous.config_column, previous=self.vector.weights,
            previous_config=self.vector.config, previous_config_column=self.vector.config_column,
            schema=self.schema, batch_size=self.batch_size, lock_timeout=self.lock_timeout, retries=self.retries,
        )

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("change_search_vector", self.schema, self.table_name, repr(self.vector))


class _NothingToRestoreOp(MigrateOperation):
    """The downgrade of a repaired trigger (what was there before was broken), or of a fill
    (``drop_search_vector`` drops the column it filled)."""

    def __init__(self, table_name: str, *, filled: bool = False) -> None:
        self.table_name, self.filled = table_name, filled

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("nothing_to_restore", self.table_name)


# -- running the steps -------------------------------------------------------------------------


class _Steps(OnlineSteps):
    """The statements of one search vector adoption, online or rendered offline."""

    def __init__(
        self, operations: Operations, table_name: str, schema: str | None, lock_timeout: str, retries: int
    ) -> None:
        self.table = qualified(schema, table_name)
        super().__init__(operations, f"adopting {SEARCH_VECTOR} on {self.table}", lock_timeout=lock_timeout,
                         retries=retries)
        self.table_name, self.schema = table_name, schema
        self.function = qualified(schema, ident(table_name, SEARCH_VECTOR))
        self.trigger = quote(ident(table_name, SEARCH_VECTOR))
        self.backfill_name = f"{table_name}.{SEARCH_VECTOR}"

    def column(self) -> str | None:
        """``"generated"``, ``"plain"``, or None (no column; offline: always None)."""
        if self.offline:
            return None
        found = kept_vector(self.bind, self.schema, self.table_name)
        return None if found is None else "generated" if found.generated else "plain"

    def keep(self, vector: _Vector, *, add: bool) -> None:
        """The column (when ``add``), the function and the trigger, in one brief transaction."""
        reads = ", ".join(quote(c) for c in vector.reads)
        self.brief(
            *([f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {SEARCH_VECTOR} tsvector"] if add else []),
            f"CREATE OR REPLACE FUNCTION {self.function}() RETURNS trigger LANGUAGE plpgsql AS "
            f"{_DOLLAR}{vector.function()}{_DOLLAR}",
            f"CREATE OR REPLACE TRIGGER {self.trigger} BEFORE INSERT OR UPDATE OF {reads} ON {self.table} "
            f"FOR EACH ROW EXECUTE FUNCTION {self.function}()",
        )

    def fill(self, vector: _Vector, *, batch_size: int, fresh: bool, only_null: bool) -> None:
        """Every row's vector computed in committing batches: those still NULL after an add,
        those that differ after a change (the rows the trigger already did are skipped)."""
        if self.offline:
            which = "NULL" if only_null else "differs from the new expression"
            self.emit(
                f"-- sa_patterns: fill {self.table}.{SEARCH_VECTOR} where it is {which}, in batches of "
                f"{batch_size} that commit (backfill {self.backfill_name!r}; online only)"
            )
            return
        live = Table(self.table_name, MetaData(), schema=self.schema, autoload_with=self.bind)
        expression = literal_column(vector.expression(), TSVECTOR)
        column = live.c[SEARCH_VECTOR]
        where = column.is_(None) if only_null else column.is_distinct_from(expression)
        run_backfill(self.bind, Backfill(self.backfill_name, live, values={SEARCH_VECTOR: expression}, where=where),
                     batch_size=batch_size, restart=fresh)

    def drop_keeper_sql(self) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {self.trigger} ON {self.table}", f"DROP FUNCTION IF EXISTS {self.function}()"]


@Operations.implementation_for(AddSearchVectorOp)
def _add_search_vector(operations: Operations, operation: AddSearchVectorOp) -> None:
    steps = _Steps(operations, operation.table_name, operation.schema, operation.lock_timeout, operation.retries)
    with operations.get_context().autocommit_block():
        found = steps.column()
        if found == "generated":
            raise ConfigurationError(
                f"add_search_vector({operation.table_name!r}): {steps.table}.{SEARCH_VECTOR} is a generated "
                "column already; there is nothing to adopt (remove the operation)."
            )
        steps.keep(operation.vector, add=True)
        if operation.fill:
            steps.fill(operation.vector, batch_size=operation.batch_size, fresh=found is None, only_null=True)
            steps.forget(steps.backfill_name)


@Operations.implementation_for(FillSearchVectorOp)
def _fill_search_vector(operations: Operations, operation: FillSearchVectorOp) -> None:
    added = operation.added
    steps = _Steps(operations, added.table_name, added.schema, added.lock_timeout, added.retries)
    with operations.get_context().autocommit_block():
        steps.fill(added.vector, batch_size=added.batch_size, fresh=False, only_null=True)
        steps.forget(steps.backfill_name)


@Operations.implementation_for(ChangeSearchVectorOp)
def _change_search_vector(operations: Operations, operation: ChangeSearchVectorOp) -> None:
    steps = _Steps(operations, operation.table_name, operation.schema, operation.lock_timeout, operation.retries)
    with operations.get_context().autocommit_block():
        if steps.column() == "generated":
            raise ConfigurationError(
                f"change_search_vector({operation.table_name!r}): {steps.table}.{SEARCH_VECTOR} is a "
                "generated column; its expression is changed by dropping and adding it."
            )
        steps.keep(operation.vector, add=False)
        steps.fill(operation.vector, batch_size=operation.batch_size, fresh=False, only_null=False)
        steps.forget(steps.backfill_name)


@Operations.implementation_for(DropSearchVectorOp)
def _drop_search_vector(operations: Operations, operation: DropSearchVectorOp) -> None:
    added = operation.added
    steps = _Steps(operations, added.table_name, added.schema, added.lock_timeout, added.retries)
    with operations.get_context().autocommit_block():
        with steps.unlimited_wait():
            steps.emit(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(added.schema, added.index_name)}")
        steps.brief(*steps.drop_keeper_sql(), f"ALTER TABLE {steps.table} DROP COLUMN IF EXISTS {SEARCH_VECTOR}")


@Operations.implementation_for(_NothingToRestoreOp)
def _nothing(operations: Operations, operation: _NothingToRestoreOp) -> None:
    return None


# -- rendering ---------------------------------------------------------------------------------


def _options(op: AddSearchVectorOp | ChangeSearchVectorOp, *, fill: bool) -> list[str]:
    args = [f"schema={op.schema!r}"] if op.schema else []
    if isinstance(op, AddSearchVectorOp) and op.index_name != ident(f"ix_{op.table_name}", SEARCH_VECTOR):
        args.append(f"index_name={op.index_name!r}")
    if fill and op.batch_size != 1000:
        args.append(f"batch_size={op.batch_size}")
    if op.lock_timeout != "2s":
        args.append(f"lock_timeout={op.lock_timeout!r}")
    return args


@renderers.dispatch_for(AddSearchVectorOp)
def _render_add(autogen_context: AutogenContext, op: AddSearchVectorOp) -> str:
    args = [repr(op.table_name), *op.vector.args(), *_options(op, fill=op.fill)]
    return f"op.add_search_vector({', '.join([*args, *([] if op.fill else ['fill=False'])])})"


@renderers.dispatch_for(DropSearchVectorOp)
def _render_drop(autogen_context: AutogenContext, op: DropSearchVectorOp) -> str:
    added = op.added
    args = [repr(added.table_name), *added.vector.args(), *_options(added, fill=False)]
    return f"op.drop_search_vector({', '.join(args)})"


@renderers.dispatch_for(ChangeSearchVectorOp)
def _render_change(autogen_context: AutogenContext, op: ChangeSearchVectorOp) -> str:
    args = [repr(op.table_name), *op.vector.args()]
    if op.previous is not None:
        args += op.previous.args("previous")
    return f"op.change_search_vector({', '.join([*args, *_options(op, fill=True)])})"


@renderers.dispatch_for(_NothingToRestoreOp)
def _render_nothing(autogen_context: AutogenContext, op: _NothingToRestoreOp) -> str:
    if op.filled:
        return f"# (the fill of {op.table_name}.{SEARCH_VECTOR}: undone by drop_search_vector)"
    return f"# (the trigger keeping {op.table_name}.{SEARCH_VECTOR} was repaired: nothing to restore)"


@renderers.dispatch_for(FillSearchVectorOp)
def _render_fill(autogen_context: AutogenContext, op: FillSearchVectorOp) -> str:
    added = op.added
    args = [repr(added.table_name), *added.vector.args(), *_options(added, fill=True)]
    return f"op.fill_search_vector({', '.join(args)})"


# -- autogenerate ------------------------------------------------------------------------------


def vector_of(column: Any) -> _Vector | None:
    """What a model's ``search_vector`` computes (its ``Column.info``), None for other columns."""
    info = getattr(column, "info", {}).get(SEARCH_INFO)
    if info is None:
        return None
    weights, config, config_column = info
    return _Vector(weights, config, config_column)


def changed_vector(
    connection: Any, schema: str | None, table: str, column: Any
) -> ChangeSearchVectorOp | None:
    """For a live plain ``search_vector`` the toolkit keeps (its function exists): None when its
    trigger computes the model's expression, else the online change (or repair) that makes it so."""
    wanted = vector_of(column)
    found = kept_vector(connection, schema, table)
    if wanted is None or found is None or not found.ours:
        return None
    if found.problem(wanted.weights, wanted.config, wanted.config_column) is None:
        return None
    previous = found.settings()
    if previous is not None and _Vector(*previous) == wanted:
        previous = None  # the function is right, the trigger is not: a repair, nothing to undo
    return ChangeSearchVectorOp(
        table, wanted.weights, config=wanted.config, config_column=wanted.config_column, schema=schema,
        previous=None if previous is None else previous[0],
        previous_config="english" if previous is None else previous[1],
        previous_config_column=None if previous is None else previous[2],
    )


@run_last
def _adopt_search_vectors(autogen_context: AutogenContext, upgrade_ops: Any, schemas: Any) -> PriorityDispatchResult:
    """``ADD COLUMN search_vector ... GENERATED ALWAYS AS (...) STORED`` on a table that exists
    (a table rewrite under ACCESS EXCLUSIVE) becomes ``op.add_search_vector``, and the change of a
    trigger-kept vector (:func:`changed_vector`, placed by the table comparison) is moved out of
    its table's operations: both first in the revision, as each commits what precedes it. The
    GIN index stays where autogenerate wrote it, built ``CONCURRENTLY`` at the end."""
    first: list[MigrateOperation] = []
    for container in upgrade_ops.ops:
        if not isinstance(container, alembic_ops.ModifyTableOps):
            continue
        kept: list[MigrateOperation] = []
        # a generated vector replaced (drop + add: its expression changed) stays as it is
        replaced = any(isinstance(op, alembic_ops.DropColumnOp) and op.column_name == SEARCH_VECTOR
                       for op in container.ops)
        for op in container.ops:
            add = op if isinstance(op, alembic_ops.AddColumnOp) and op.column.name == SEARCH_VECTOR else None
            vector = None if add is None or replaced else vector_of(add.column)
            if vector is not None:
                first += _adoption(upgrade_ops, AddSearchVectorOp(
                    container.table_name, vector.weights, config=vector.config,
                    config_column=vector.config_column, schema=container.schema,
                ))
            elif isinstance(op, ChangeSearchVectorOp):
                first.append(op)
            else:
                kept.append(op)
        container.ops = kept
    if first:
        upgrade_ops.ops[:] = [*first, *(o for o in upgrade_ops.ops if not (
            isinstance(o, alembic_ops.ModifyTableOps) and not o.ops))]
    return PriorityDispatchResult.CONTINUE


def _adoption(upgrade_ops: Any, add: AddSearchVectorOp) -> list[MigrateOperation]:
    """The operations that adopt the vector. On a ``Versioned`` table whose history gains the
    column in this revision: the column and its trigger first, then the history's column
    (``IF NOT EXISTS``: a rerun after an interrupted fill passes it) and its function, which
    knows the vector is derived, and the fill last, so the fill opens no version of every row."""
    history = ident(add.table_name, "history")
    moved: list[MigrateOperation] = []
    for container in upgrade_ops.ops:
        if isinstance(container, alembic_ops.ModifyTableOps) and container.table_name == history \
                and (container.schema or "") == (add.schema or ""):
            column = next((o for o in container.ops if isinstance(o, alembic_ops.AddColumnOp)
                           and o.column.name == SEARCH_VECTOR), None)
            if column is not None:
                container.ops.remove(column)
                column.if_not_exists = True
                moved.append(alembic_ops.ModifyTableOps(history, [column], schema=add.schema))
    for op in list(upgrade_ops.ops):
        entity = getattr(op, "entity", None)
        if isinstance(op, ReplaceEntityOp) and isinstance(entity, Function) and entity.name == history \
                and (entity.schema or "") == (add.schema or ""):
            upgrade_ops.ops.remove(op)
            moved.append(op)
    if not moved:
        return [add]
    add.fill = False
    return [add, *moved, FillSearchVectorOp(add)]
