"""What PostgreSQL knows about views: canonical definitions and the dependency graph.

Two definitions are "the same" when PostgreSQL prints them the same: ``pg_get_viewdef`` of the
stored view against the model's SQL created as a temporary view inside a SAVEPOINT (rolled
back) and printed the same way. No text normalisation of ours can drift from the server's.

The graph comes from ``pg_depend`` through ``pg_rewrite`` (a view's rule depends on every
relation its query reads), never from declaration order.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import DDL, bindparam, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .objects import qualified, quote

__all__ = ["Canonical", "ViewGraph", "canonical", "column_readers", "live", "read_view_graph"]

_CANON_NAME = "_sa_patterns_canonical_view"

_COLUMNS = text(
    "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) "
    "FROM pg_catalog.pg_attribute a WHERE a.attrelid = CAST(:oid AS oid) "
    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
)
_VIEWDEF = text(
    "SELECT c.oid, pg_catalog.pg_get_viewdef(c.oid, true) FROM pg_catalog.pg_class c "
    "WHERE c.oid = pg_catalog.to_regclass(:name) AND c.relkind IN ('v', 'm')"
)
_NODES = text(
    "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
)
# A view's rewrite rule depends on each relation its query reads (deptype 'n').
_EDGES = text(
    "SELECT DISTINCT r.ev_class, d.refobjid FROM pg_catalog.pg_depend d "
    "JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid "
    "WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass "
    "AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'n' "
    "AND d.refobjid <> r.ev_class"
)

# Column-level: a view's rule depends on each table column it reads (refobjsubid = attnum).
_COLUMN_READERS = text(
    "SELECT DISTINCT r.ev_class FROM pg_catalog.pg_depend d "
    "JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid "
    "JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
    "WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass "
    "AND d.refobjid = pg_catalog.to_regclass(:table) AND a.attname IN :columns "
    "AND r.ev_class <> d.refobjid"
).bindparams(bindparam("columns", expanding=True))


def column_readers(
    connection: Connection, schema: str | None, table: str, columns: Iterable[str]
) -> set[int]:
    """The views reading any of ``columns`` of ``table`` directly."""
    names = list(columns)
    if not names:
        return set()
    rows = connection.execute(_COLUMN_READERS, {"table": qualified(schema, table), "columns": names})
    return {int(oid) for (oid,) in rows}


@dataclass(frozen=True)
class Canonical:
    """A view definition as PostgreSQL prints it, with its output columns (name, type)."""

    definition: str
    columns: tuple[tuple[str, str], ...]


def _columns(connection: Connection, oid: int) -> tuple[tuple[str, str], ...]:
    return tuple((str(n), str(t)) for n, t in connection.execute(_COLUMNS, {"oid": oid}))


def live(connection: Connection, schema: str | None, name: str) -> Canonical | None:
    """The stored view (or materialized view) as PostgreSQL prints it; ``None`` if absent."""
    row = connection.execute(_VIEWDEF, {"name": qualified(schema, name)}).first()
    if row is None:
        return None
    return Canonical(str(row[1]).strip(), _columns(connection, int(row[0])))


def canonical(connection: Connection, definition: str) -> Canonical | None:
    """``definition`` as PostgreSQL would store it, or ``None`` if it cannot be created yet
    (it reads a table or view the same migration creates)."""
    savepoint = connection.begin_nested()
    try:
        # A temporary plain view: same printed query as a materialized view, no data computed.
        create = f"CREATE TEMPORARY VIEW {quote(_CANON_NAME)} AS\n{definition}"
        connection.execute(DDL(create.replace("%", "%%")))  # type: ignore[no-untyped-call]
        result = live(connection, "pg_temp", _CANON_NAME)
    except DBAPIError:
        result = None
    finally:
        savepoint.rollback()
    return result


@dataclass
class ViewGraph:
    """Views and materialized views (``oid -> (schema, name, relkind)``) and the relations
    (views or tables) each one reads."""

    nodes: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    reads: dict[int, set[int]] = field(default_factory=dict)

    def find(self, schema: str, name: str) -> int | None:
        for oid, (nsp, rel, _) in self.nodes.items():
            if nsp == schema and rel == name:
                return oid
        return None

    def dependents(self, oid: int) -> list[int]:
        """Every view reading ``oid`` directly or through other views, dependencies first."""
        found: set[int] = set()
        stack = [oid]
        while stack:
            current = stack.pop()
            for dependent, reads in self.reads.items():
                if current in reads and dependent not in found and dependent != oid:
                    found.add(dependent)
                    stack.append(dependent)
        return self.ordered(found)

    def ordered(self, oids: Iterable[int]) -> list[int]:
        """``oids`` with each one after everything it reads (transitively, through views
        outside the set too)."""
        wanted = set(oids)
        sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
        for oid in sorted(wanted):
            sorter.add(oid, *(self._upstream(oid) & wanted))
        return list(sorter.static_order())

    def _upstream(self, oid: int) -> set[int]:
        seen: set[int] = set()
        stack = list(self.reads.get(oid, ()))
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            stack.extend(self.reads.get(current, ()))
        return seen


def read_view_graph(connection: Connection) -> ViewGraph:
    graph = ViewGraph()
    for oid, nspname, relname, relkind in connection.execute(_NODES):
        graph.nodes[int(oid)] = (str(nspname), str(relname), str(relkind))
    for dependent, referenced in connection.execute(_EDGES):
        if int(dependent) in graph.nodes:  # referenced: a view or any other relation
            graph.reads.setdefault(int(dependent), set()).add(int(referenced))
    return graph
