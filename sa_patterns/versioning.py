"""History tables written by the database: ``Versioned``, ``history()``, ``as_of()``, ``revert()``.

A ``Versioned`` table ``t`` gets ``t_history``: a copy of its columns plus ``version`` (1, 2, ...
per row), ``valid_from`` and ``valid_to`` (``NULL`` while the version is current). Three
statement-level triggers keep it: an INSERT opens version 1 (or the next number, if the key was
used before), an UPDATE that really changes a row closes its current version and opens the next,
a DELETE closes it. Raw SQL and bulk statements are versioned like ORM writes.

The history table is an ordinary ``Table`` on the model's metadata, built from the source
columns when the class is defined, so autogenerate adds, drops and retypes its columns in the same
migration as the source table's. As with ``Audited``, the old/new pairing is a ``FULL JOIN``
behind ``OFFSET 0``, which no cached plan can turn into a quadratic nested loop; an UPDATE of one
row with its key unchanged (an ORM flush) skips it for two one-row statements, cheaper to start.

Timestamps are the trigger's ``clock_timestamp()`` (the statement's end), so consecutive versions
of a row never overlap even across concurrent transactions; a version opened and closed by the same
statement sequence inside one transaction may be zero-length, which ``as_of`` never returns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy import MetaData, Table
from sqlalchemy.orm import Mapper, Session

from ._transition import NEW, OLD, one_row_probe
from .errors import ConfigurationError, NotFound
from .schema import Entity, Function, Trigger, ident, qualified, quote, register

__all__ = ["Version", "Versioned", "as_of", "backfill", "history", "history_table", "revert"]

_HISTORY_KEY = "sa_patterns.history_tables"
#: Columns the history table adds to the source's.
META_COLUMNS = ("version", "valid_from", "valid_to")


def _history_columns(table: Table) -> list[sa.Column[Any]]:
    """Copies of the source columns: same names and types, no defaults or constraints.

    The source's primary key stays NOT NULL (it is part of the history key); everything else is
    nullable, so a NOT NULL added later to the source never fails on old versions.
    """
    columns = []
    for column in table.columns:
        columns.append(
            sa.Column(
                column.name,
                column.type,
                primary_key=column.primary_key,
                nullable=not column.primary_key,
                autoincrement=False,
            )
        )
    return columns


def _history_body(table: Table, history: Table) -> str:
    pk = [c.name for c in table.primary_key.columns]
    cols = [c.name for c in table.columns]
    target = qualified(history.schema, history.name)
    col_list = ", ".join(quote(c) for c in cols)

    def match(alias: str) -> str:
        return " AND ".join(f"h.{quote(c)} = {alias}.{quote(c)}" for c in pk)

    def next_version(alias: str) -> str:
        return f"coalesce((SELECT max(h.version) FROM {target} h WHERE {match(alias)}), 0) + 1"  # noqa: S608

    join = " AND ".join(f"sa_o.{quote(c)} = sa_n.{quote(c)}" for c in pk)
    keys = ", ".join(f"sa_o.{quote(c)} AS {quote('o_' + c)}, sa_n.{quote(c)} AS {quote('n_' + c)}" for c in pk)
    first_o, first_n = quote("o_" + pk[0]), quote("n_" + pk[0])
    closed = ", ".join(f"p.{quote('o_' + c)} AS {quote(c)}" for c in pk)
    pairs = (
        f"SELECT sa_n AS sa_row, {keys}, to_jsonb(sa_o.*) IS DISTINCT FROM to_jsonb(sa_n.*) AS sa_changed\n"  # noqa: S608
        f"        FROM {OLD} sa_o FULL JOIN {NEW} sa_n ON {join}\n"
        "        OFFSET 0"
    )
    same_key = " AND ".join(f"sa_o.{quote(c)} = sa_n.{quote(c)}" for c in pk)
    probe = one_row_probe(
        [same_key, "to_jsonb(sa_o.*) IS DISTINCT FROM to_jsonb(sa_n.*)"], ["v_same_key", "v_changed"], "v_rows"
    )
    # quoted identifiers only
    return f"""\
DECLARE
  v_at timestamptz := clock_timestamp();
  v_same_key boolean;
  v_changed boolean;
  v_rows bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO {target} ({col_list}, version, valid_from)
    SELECT {", ".join(f"sa_n.{quote(c)}" for c in cols)}, {next_version("sa_n")}, v_at
    FROM {NEW} sa_n;
  ELSIF TG_OP = 'DELETE' THEN
    UPDATE {target} h SET valid_to = greatest(v_at, h.valid_from)
    FROM {OLD} sa_o
    WHERE {match("sa_o")} AND h.valid_to IS NULL;
  ELSE
    -- One row, key unchanged (an ORM flush): two one-row statements. The set-based pair below
    -- pays its start-up (a hash table per join) on every statement.
{probe}    IF v_rows = 1 AND v_same_key THEN
      IF v_changed THEN
        UPDATE {target} h SET valid_to = greatest(v_at, h.valid_from)
        FROM {OLD} sa_o
        WHERE {match("sa_o")} AND h.valid_to IS NULL;
        INSERT INTO {target} ({col_list}, version, valid_from)
        SELECT {", ".join(f"sa_n.{quote(c)}" for c in cols)}, {next_version("sa_n")}, v_at
        FROM {NEW} sa_n;
      END IF;
      RETURN NULL;
    END IF;
    -- Several rows, or a changed key.
    -- FULL JOIN behind OFFSET 0: linear whatever row count the cached plan was made for.
    -- Close the current version of rows that were really changed (or re-keyed) ...
    UPDATE {target} h SET valid_to = greatest(v_at, h.valid_from)
    FROM (
      SELECT {closed} FROM (
        {pairs}
      ) p
      WHERE p.{first_o} IS NOT NULL AND (p.{first_n} IS NULL OR p.sa_changed)
    ) x
    WHERE {match("x")} AND h.valid_to IS NULL;
    -- ... and open their next version.
    INSERT INTO {target} ({col_list}, version, valid_from)
    SELECT {", ".join(f"x.{quote(c)}" for c in cols)}, {next_version("x")}, v_at
    FROM (
      SELECT (p.sa_row).* FROM (
        {pairs}
      ) p
      WHERE p.{first_n} IS NOT NULL AND (p.{first_o} IS NULL OR p.sa_changed)
    ) x;
  END IF;
  RETURN NULL;
END;"""  # noqa: S608


def history_objects(table: Table, history: Table) -> list[Entity]:
    """The trigger function and the three statement-level triggers maintaining ``history``."""
    fn = ident(table.name, "history")
    call = f"{qualified(table.schema, fn)}()"
    return [
        Function(table.schema, fn, returns="trigger", body=_history_body(table, history)),
        *[
            Trigger(
                table.schema,
                table.name,
                ident(table.name, f"history_{op.lower()[:3]}"),
                when=f"AFTER {op}",
                function=call,
                for_each="STATEMENT",
                referencing=referencing,
            )
            for op, referencing in (
                ("INSERT", f"NEW TABLE AS {NEW}"),
                ("UPDATE", f"OLD TABLE AS {OLD} NEW TABLE AS {NEW}"),
                ("DELETE", f"OLD TABLE AS {OLD}"),
            )
        ],
    ]


def history_table(model: Any) -> Table:
    """The ``<table>_history`` table of a ``Versioned`` model (or of its ``Table``)."""
    table = model if isinstance(model, Table) else getattr(model, "__table__", None)
    # kept beside the metadata, not in Table.info: Alembic renders Table.info into migrations
    history = (
        table.metadata.info.get(_HISTORY_KEY, {}).get(table.key) if isinstance(table, Table) else None
    )
    if history is None:
        raise ConfigurationError(
            f"{model!r} is not Versioned: add the Versioned mixin to the model to get a history table."
        )
    result: Table = history
    return result


class Versioned:
    """Mixin: keep every version of each row in ``<table>_history``, maintained by triggers."""

    __history_table__: ClassVar[Table]

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        table = cls.__dict__.get("__table__")
        if not isinstance(table, Table):
            return
        if not table.primary_key.columns:
            raise ConfigurationError(
                f"Versioned table {table.name!r} has no primary key; versions are kept per key."
            )
        clash = set(META_COLUMNS) & set(table.c.keys())
        if clash:
            raise ConfigurationError(
                f"{cls.__name__} has column(s) {sorted(clash)}, which its history table uses for "
                "version bookkeeping. Rename the column(s) (mapped_column('name', ...) keeps the "
                "attribute name) or do not make the model Versioned."
            )
        history = _define_history(table)
        register(table.metadata, *history_objects(table, history))
        table.metadata.info.setdefault(_HISTORY_KEY, {})[table.key] = history
        cls.__history_table__ = history


def _define_history(table: Table) -> Table:
    metadata: MetaData = table.metadata
    name = ident(table.name, "history")
    key = f"{table.schema}.{name}" if table.schema else name
    if key in metadata.tables:
        raise ConfigurationError(
            f"a table named {key!r} already exists; Versioned needs that name for "
            f"{table.name!r}'s history. Rename one of them."
        )
    history = Table(
        name,
        metadata,
        *_history_columns(table),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True)),
        schema=table.schema,
        comment=f"Versions of {table.name}, written by sa_patterns triggers.",
    )
    # the primary key (source key + version) serves history() and the next-version lookup
    sa.Index(ident(name, "valid_from"), history.c.valid_from, postgresql_using="brin")
    return history


# --------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class Version:
    """One version of a row: its number, its validity period and its column values."""

    version: int
    valid_from: dt.datetime
    valid_to: dt.datetime | None
    values: Mapping[str, Any]

    @property
    def is_current(self) -> bool:
        return self.valid_to is None


def _mapper(obj: object) -> tuple[Mapper[Any], tuple[Any, ...]]:
    state = sa.inspect(obj, raiseerr=True)
    identity = getattr(state, "identity", None)
    if identity is None:
        raise ConfigurationError(
            f"{obj!r} has no primary key yet; flush it before asking for its history."
        )
    return state.mapper, identity


def _key_filter(table: Table, history: Table, identity: tuple[Any, ...]) -> list[Any]:
    return [
        history.c[col.name] == value
        for col, value in zip(table.primary_key.columns, identity, strict=True)
    ]


def history(session: Session, obj: object) -> list[Version]:
    """Every recorded version of ``obj``'s row, oldest first.

    For an ``AsyncSession``: ``await session.run_sync(sa_patterns.history, obj)``.
    """
    mapper, identity = _mapper(obj)
    table = mapper.local_table
    assert isinstance(table, Table)
    hist = history_table(table)
    source_names = [c.name for c in table.columns]
    rows = session.execute(
        sa.select(hist).where(*_key_filter(table, hist, identity)).order_by(hist.c.version)
    ).mappings()
    return [
        Version(
            version=row["version"],
            valid_from=row["valid_from"],
            valid_to=row["valid_to"],
            values={name: row[name] for name in source_names},
        )
        for row in rows
    ]


def as_of(model: Any, when: dt.datetime | sa.ColumnElement[Any]) -> sa.Subquery:
    """The model's table as it was at ``when``: a subquery with the table's columns.

    Use it like a table: ``a = as_of(Article, t); select(a.c.title).join(...)``. It is a plain
    selectable (not ORM entities), so historical rows never enter the identity map.
    """
    table = model if isinstance(model, Table) else model.__table__
    hist = history_table(table)
    point = when if isinstance(when, sa.ColumnElement) else sa.literal(when, sa.DateTime(timezone=True))
    return (
        sa.select(*[hist.c[c.name].label(c.name) for c in table.columns])
        .where(
            hist.c.valid_from <= point,
            sa.or_(hist.c.valid_to.is_(None), hist.c.valid_to > point),
        )
        .subquery(f"{table.name}_as_of")
    )


def revert(session: Session, obj: Any, version: int | Version) -> Any:
    """Set ``obj``'s columns back to a recorded ``version`` (a number or a :class:`Version`).

    The change is an ordinary UPDATE at the next flush, so it is audited and becomes a new
    version itself; nothing is rewritten. The primary key is never changed.
    For an ``AsyncSession``: ``await session.run_sync(sa_patterns.revert, obj, 3)``.
    """
    mapper, identity = _mapper(obj)
    table = mapper.local_table
    assert isinstance(table, Table)
    values: Mapping[str, Any]
    if isinstance(version, Version):
        values = version.values
    else:
        hist = history_table(table)
        row = session.execute(
            sa.select(hist).where(*_key_filter(table, hist, identity), hist.c.version == version)
        ).mappings().first()
        if row is None:
            raise NotFound(
                f"{mapper.class_.__name__} {identity} has no version {version}; "
                "sa_patterns.history(session, obj) lists the versions it has."
            )
        values = dict(row)
    pk = {c.name for c in table.primary_key.columns}
    for prop in mapper.column_attrs:
        for column in prop.columns:
            if (
                isinstance(column, sa.Column)
                and column.table is table
                and column.name not in pk
                and column.name in values
            ):
                setattr(obj, prop.key, values[column.name])
    return obj


def backfill(bind: Any, model: Any) -> int:
    """Open version 1 for every row that has no current version; returns how many.

    For tables that held rows before they became ``Versioned`` (run it in the migration that
    adds the history table, e.g. ``backfill(op.get_bind(), Model)``): until then ``as_of`` does
    not see those rows. Idempotent.
    """
    table = model if isinstance(model, Table) else model.__table__
    hist = history_table(table)
    pk = list(table.primary_key.columns)
    current = sa.select(sa.literal(1)).where(
        *[hist.c[c.name] == c for c in pk], hist.c.valid_to.is_(None)
    )
    versions = (
        sa.select(sa.func.coalesce(sa.func.max(hist.c.version), 0) + 1)
        .where(*[hist.c[c.name] == c for c in pk])
        .scalar_subquery()
    )
    rows = sa.select(
        *table.columns, versions, sa.func.clock_timestamp()
    ).where(~current.exists())
    result = bind.execute(
        sa.insert(hist)
        .from_select([*[c.name for c in table.columns], "version", "valid_from"], rows)
        .execution_options(preserve_rowcount=True)  # INSERT rowcount is opt-in in SQLAlchemy 2
    )
    return int(result.rowcount)
