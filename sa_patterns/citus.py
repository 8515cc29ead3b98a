"""Citus: distribute tenant tables by ``tenant_id`` and replicate shared tables, in migrations.

Citus spreads a table over worker nodes by a *distribution column*. Distributing every tenant
table by ``tenant_id`` **co-locates** them: one tenant's rows of every table live on the same
node, so joins and foreign keys within a tenant stay local. Small shared tables (plans,
countries) become *reference tables*, copied to every node.

A table is distributed once, right after it is created, so the calls are added to the revision
that creates the table (never diffed afterwards: nothing to compare, no false diff). Wire it in
``env.py``::

    context.configure(..., **sa_patterns.alembic.configure_kwargs(
        process_revision_directives=sa_patterns.citus.revision_directives))

Declare it on the model: ``class Invoice(Distributed, Base): __distribute_by__ = "tenant_id"``
(any column; ``"reference"`` for a reference table), or ``__citus__ = True`` on a
:class:`~sa_patterns.TenantMixin` model (distributed by ``tenant_id``), or
:func:`reference_table` on shared ones. Tables distributed by the same column are co-located
with the first of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from alembic.operations import ops
from sqlalchemy import MetaData, Table, UniqueConstraint
from sqlalchemy.orm import Mapper

from ._mapping import own_table, when_mapped
from .errors import ConfigurationError
from .schema.objects import qualified, quote_literal
from .tenancy import citus_mode, set_citus_mode

__all__ = ["Distributed", "citus_statements", "reference_table", "revision_directives"]

_COLUMNS = "sa_patterns.citus.columns"

T = TypeVar("T")


def reference_table(target: T) -> T:
    """Mark a mapped class (usable as a decorator) or a ``Table`` as a Citus reference table."""
    table = target if isinstance(target, Table) else getattr(target, "__table__", None)
    if not isinstance(table, Table):
        raise ConfigurationError("reference_table() takes a mapped class or a Table.")
    set_citus_mode(table, "reference")
    return target


def _mode(table: Table) -> str | None:
    return citus_mode(table)


def _column(table: Table) -> str:
    return str(table.metadata.info.get(_COLUMNS, {}).get(table.key, "tenant_id"))


class Distributed:
    """Mixin: ``__distribute_by__ = "<column>"`` distributes the table by that column,
    ``__distribute_by__ = "reference"`` makes it a reference table (copied to every node).

    Citus enforces primary keys and unique constraints per shard, so they must include the
    distribution column: forgetting it is a :class:`ConfigurationError` here, not at migration.
    """

    __distribute_by__: ClassVar[str]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        when_mapped(cls, _set_up)


def _set_up(mapper: Mapper[Any]) -> None:
    """A distributed class is mapped (by any declarative style): mark its table."""
    cls = mapper.class_
    table = own_table(mapper)
    spec = getattr(cls, "__distribute_by__", None)
    if table is None or spec is None:
        return
    if spec == "reference":
        set_citus_mode(table, "reference")
        return
    if spec not in table.c:
        raise ConfigurationError(
            f"{cls.__name__}.__distribute_by__ = {spec!r} is not a column of {table.name}."
        )
    keys = [("primary key", {c.name for c in table.primary_key.columns})]
    keys += [(f"unique constraint {c.name}", {col.name for col in c.columns})
             for c in table.constraints if isinstance(c, UniqueConstraint)]
    for what, cols in keys:
        if cols and spec not in cols:
            raise ConfigurationError(
                f"{cls.__name__}: the {what} ({', '.join(sorted(cols))}) must include the "
                f"distribution column {spec!r}: Citus checks uniqueness per shard. Add "
                f"{spec!r} to it (e.g. primary key ({spec}, id))."
            )
    set_citus_mode(table, "distributed")
    table.metadata.info.setdefault(_COLUMNS, {})[table.key] = spec


def citus_statements(tables: Sequence[Table]) -> list[str]:
    """``SELECT create_reference_table(...)`` for reference tables first (distributed tables may
    reference them), then ``create_distributed_table(table, column)``, each co-located with the
    first table distributed by the same column, in the order given (dependency order)."""
    statements = []
    for table in tables:
        if _mode(table) == "reference":
            name = quote_literal(qualified(table.schema, table.name))
            statements.append(f"SELECT create_reference_table({name})")
    first: dict[str, str] = {}
    for table in tables:
        if _mode(table) != "distributed":
            continue
        name = quote_literal(qualified(table.schema, table.name))
        column = _column(table)
        colocate = f", colocate_with => {first[column]}" if column in first else ""
        statements.append(
            f"SELECT create_distributed_table({name}, {quote_literal(column)}{colocate})"
        )
        first.setdefault(column, name)
    return statements


def _target_tables(context: Any) -> dict[tuple[str | None, str], Table]:
    metadata = context.opts.get("target_metadata")
    found: dict[tuple[str | None, str], Table] = {}
    for md in metadata if isinstance(metadata, (list, tuple)) else [metadata]:
        if isinstance(md, MetaData):
            for table in md.sorted_tables:
                found[(table.schema, table.name)] = table
    return found


def revision_directives(context: Any, revision: Any, directives: list[Any]) -> None:
    """``process_revision_directives`` hook: after the tables a revision creates, distribute the
    marked ones (the downgrade drops the tables, which drops their shards)."""
    if not directives:
        return
    tables = _target_tables(context)
    for upgrade_ops in directives[0].upgrade_ops_list:
        created = [op for op in upgrade_ops.ops if isinstance(op, ops.CreateTableOp)]
        marked = [
            tables[(op.schema, op.table_name)]
            for op in created
            if (op.schema, op.table_name) in tables and _mode(tables[(op.schema, op.table_name)])
        ]
        if not marked:
            continue
        # after the created tables and their indexes (ModifyTableOps right behind them)
        names = {(op.schema, op.table_name) for op in created}
        at = 1 + max(
            i for i, op in enumerate(upgrade_ops.ops)
            if isinstance(op, ops.CreateTableOp)
            or (isinstance(op, ops.ModifyTableOps) and (op.schema, op.table_name) in names)
        )
        upgrade_ops.ops[at:at] = [ops.ExecuteSQLOp(sql) for sql in citus_statements(marked)]
