"""Explicit joins and plain tables get the patterns' row conditions.

SQLAlchemy's loader criteria reach what a SELECT selects, what it joins with ``.join()`` and an
entity it names alone in ``select_from()``; they do not reach the tables inside a ``Join`` object
passed to ``select_from()`` (``sqlalchemy.join``, ``orm.join``, ``Table.join``), nor a plain
``Table`` named there (``select_from(Project.__table__)``):
``select(func.count()).select_from(join(Project, Task, ...))`` would count every tenant's rows.
This module rewrites such FROMs: each table on the right of a join gets the conditions in its
``ON`` clause (an outer join stays an outer join), the leftmost table, or a plain table alone,
gets them in the SELECT's ``WHERE``. A ``FULL`` join over a table with conditions is refused: no
placement keeps both its meaning and the wall.

On SQLAlchemy 2.1 they are searched where they can be found cheaply: the ``select_from()`` list
of a SELECT, of each SELECT of a UNION, and of the subqueries and CTEs those name (in FROM or in
the column list), at any depth. A subquery in a WHERE clause is not searched there (that would
walk every statement); its selected entities are still filtered by the loader criteria, and
row-level security covers the rest. On 2.0, whose loader criteria also miss the plain table of
``relationship.has()``/``any()`` (``EXISTS (SELECT 1 FROM parent WHERE ...)``), every nested
SELECT is searched (``deep``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, and_
from sqlalchemy.sql import ClauseElement, ColumnElement
from sqlalchemy.sql.selectable import (
    CompoundSelect,
    FromGrouping,
    Join,
    Select,
)
from sqlalchemy.sql.visitors import iterate, replacement_traverse

from ._compat import explicit_froms, insert_parts, parent_entity, raw_columns, replace_insert
from .errors import UnsupportedStatement

__all__ = ["Criteria", "base_table", "scope_explicit_joins"]

#: The conditions a table (or an alias of one) must meet, from every installed pattern.
Criteria = Callable[[Any], list[ColumnElement[bool]]]


def scope_explicit_joins(
    statement: Any,
    criteria: Criteria,
    *,
    deep: bool = False,
    selects: Sequence[Select[Any]] | None = None,
) -> Any:
    """``statement`` with the conditions of ``criteria`` in every explicit join and plain table
    of its FROM lists (see the module docstring); ``statement`` itself when it holds none.
    ``deep`` also searches the SELECTs nested in WHERE clauses and column lists; ``selects``,
    every SELECT of the statement when the caller walked it already (one walk serves both)."""
    if deep:
        found = selects if selects is not None else [
            e for e in iterate(statement) if isinstance(e, Select)
        ]
        if not any(_needs(s) for s in found):
            return statement
    scope = _tree if deep else _scoped
    if isinstance(statement, (Select, CompoundSelect)):
        return scope(statement, criteria)
    select = getattr(statement, "select", None)
    if isinstance(select, (Select, CompoundSelect)):  # INSERT ... SELECT
        scoped = scope(select, criteria)
        if scoped is not select:
            return replace_insert(statement, select=scoped, names=insert_parts(statement).names)
    if deep and isinstance(statement, ClauseElement):  # UPDATE / DELETE ... WHERE (subquery)
        return _tree(statement, criteria)
    return statement


def _tree(element: Any, criteria: Criteria) -> Any:
    def nested(inner: Any, **kw: Any) -> Any:
        return _tree(inner, criteria) if inner is not element and isinstance(inner, Select) else None

    replaced = replacement_traverse(element, {}, nested)  # type: ignore[call-overload]
    return _scoped(replaced, criteria, follow=False) if isinstance(replaced, Select) else replaced


def _needs(select: Select[Any]) -> bool:
    return any(isinstance(f, Join) or _is_plain_table(f) for f in explicit_froms(select))


def _scoped(select: Any, criteria: Criteria, *, follow: bool = True) -> Any:
    """``select`` scoped; ``follow``: also the SELECTs of the subqueries its FROMs name."""
    swaps: dict[Any, Any] = {}
    if isinstance(select, CompoundSelect):
        for member in select.selects:
            scoped = _scoped(member, criteria, follow=follow)
            if scoped is not member:
                swaps[member] = scoped
        return _swap(select, swaps)
    where: list[ColumnElement[bool]] = []
    for from_ in explicit_froms(select):
        if isinstance(from_, Join):
            new, left = _join(from_, criteria, swaps if follow else None)
            where.extend(left)
            if new is not from_:
                swaps[from_] = new
        elif _is_plain_table(from_):
            where.extend(criteria(from_))
        elif follow:
            _nested(from_, criteria, swaps)
    if follow:
        for column in raw_columns(select):  # subqueries a column list names (sub.c.x)
            _nested(getattr(column, "table", None), criteria, swaps)
    if not swaps and not where:
        return select
    scoped = _swap(select, swaps)
    return scoped.where(*where) if where else scoped


def _swap(element: Any, swaps: dict[Any, Any]) -> Any:
    if not swaps:
        return element
    return replacement_traverse(element, {}, lambda e, **kw: swaps.get(e))  # type: ignore[call-overload]


def _nested(from_: Any, criteria: Criteria, swaps: dict[Any, Any]) -> None:
    """A subquery or CTE in FROM: scope the SELECT inside it."""
    inner = getattr(from_, "element", None)
    if isinstance(inner, (Select, CompoundSelect)) and inner not in swaps:
        scoped = _scoped(inner, criteria)
        if scoped is not inner:
            swaps[inner] = scoped


def _join(
    join: Join, criteria: Criteria, swaps: dict[Any, Any] | None
) -> tuple[Any, list[ColumnElement[bool]]]:
    """``join`` with its right sides' conditions in their ON clauses, and the conditions of its
    leftmost table (for the enclosing WHERE)."""
    left, right = _ungroup(join.left), _ungroup(join.right)
    if isinstance(left, Join):
        new_left, outer = _join(left, criteria, swaps)
    else:
        new_left, outer = left, _leaf(left, criteria, swaps)
    if isinstance(right, Join):
        new_right, inner = _join(right, criteria, swaps)
        on_right = inner  # a parenthesised join on the right: its leftmost table's conditions
    else:
        new_right, on_right = right, _leaf(right, criteria, swaps)
    if join.full and (outer or on_right):
        raise UnsupportedStatement(
            "a FULL OUTER JOIN over a tenant-scoped or soft-deletable table cannot be scoped: "
            "rows of either side that match nothing would show through. Join the filtered "
            "sides with LEFT joins (or select each side) instead."
        )
    if not on_right and new_left is left and new_right is right:
        return join, outer
    onclause = and_(join.onclause, *on_right) if on_right else join.onclause  # type: ignore[arg-type]
    return new_left.join(new_right, onclause, isouter=join.isouter, full=join.full), outer


def _leaf(
    from_: Any, criteria: Criteria, swaps: dict[Any, Any] | None
) -> list[ColumnElement[bool]]:
    if _is_table(from_):
        return criteria(from_)
    if swaps is not None:
        _nested(from_, criteria, swaps)
    return []


def _is_plain_table(from_: Any) -> bool:
    """A table (or an alias of one) named in FROM as such, not as an ORM entity (an entity's
    table carries its ``parententity`` annotation, and loader criteria reach it)."""
    return _is_table(from_) and parent_entity(from_) is None


def base_table(from_: Any) -> Table | None:
    """The ``Table`` under ``from_`` (itself, or the table an alias or annotation wraps); None
    for anything else (a join, a subquery)."""
    while not isinstance(from_, Table):
        from_ = getattr(from_, "element", None)
        if from_ is None or isinstance(from_, (Select, CompoundSelect)):
            return None
    return from_


def _is_table(from_: Any) -> bool:
    return base_table(from_) is not None


def _ungroup(from_: Any) -> Any:
    while isinstance(from_, FromGrouping):
        from_ = from_.element
    return from_
