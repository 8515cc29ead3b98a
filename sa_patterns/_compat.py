"""The few places where SQLAlchemy 2.0 and 2.1 behave differently, in one module.

The package supports ``SQLAlchemy>=2.0.30,<2.2``; code elsewhere calls these helpers instead of
testing versions itself, so the day 2.0 support ends this module is all that goes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import sqlalchemy
from sqlalchemy.engine import Result
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.sql import ClauseElement, ColumnElement, Select
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, ColumnClause
from sqlalchemy.sql.lambdas import StatementLambdaElement
from sqlalchemy.sql.schema import ColumnElementColumnDefault
from sqlalchemy.sql.selectable import FromGrouping, Join, TableClause
from sqlalchemy.sql.visitors import replacement_traverse

__all__ = [
    "SQLALCHEMY_21",
    "InsertParts",
    "add_parameters",
    "compound_options_in_cache_key",
    "conflict_set",
    "conflict_update",
    "explicit_froms",
    "insert_parts",
    "is_orphan",
    "nested_selects",
    "per_row_update_default",
    "prefetch_update_default",
    "raw_columns",
    "replace_insert",
    "update_values",
    "walks_statements",
    "where_entities_as_froms",
    "with_conflict_where",
]

#: True on SQLAlchemy 2.1 or later.
SQLALCHEMY_21: bool = tuple(int(p) for p in sqlalchemy.__version__.split(".")[:2]) >= (2, 1)


def add_parameters(
    state: ORMExecuteState, parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> Result[Any] | None:
    """Run ``state``'s statement with ``parameters`` (each set a superset of the original one).

    A ``do_orm_execute`` hook must ``return`` what this returns. SQLAlchemy 2.1 reads back
    ``state.parameters`` after the hooks (returns ``None``); 2.0 ignores a new value there, so the
    statement is run with the new parameters through ``state.invoke_statement`` (the hooks after
    this one still run, on the new parameters) and its result is returned to the caller.
    """
    if SQLALCHEMY_21:
        state.parameters = parameters if isinstance(parameters, Mapping) else list(parameters)
        return None
    if isinstance(parameters, Mapping):
        return state.invoke_statement(params=dict(parameters))
    return state.invoke_statement(params=[dict(p) for p in parameters])


def _where_entities(select: Select[Any]) -> list[Any]:
    """ORM entities (mapper or alias inspections) named in ``select``'s WHERE, not in subqueries."""
    found: list[Any] = []
    stack: list[Any] = list(select._where_criteria)
    while stack:
        elem = stack.pop()
        info = elem._annotations.get("parententity")
        if info is not None and info not in found:
            found.append(info)
        if type(elem) is BinaryExpression:  # its children, read directly (see nested_selects)
            stack.append(elem.left)
            stack.append(elem.right)
        elif isinstance(elem, ColumnElement) and not isinstance(elem, _LEAVES):
            stack.extend(elem.get_children())
    return found


def _surface(froms: Iterable[Any]) -> set[Any]:
    """The tables and aliases in ``froms`` (joins opened), with their clones."""
    found: set[Any] = set()
    stack = list(froms)
    while stack:
        from_ = stack.pop()
        found.update(from_._cloned_set)
        if isinstance(from_, Join):
            stack.extend((from_.left, from_.right))
        elif isinstance(from_, FromGrouping):
            stack.append(from_.element)
    return found


#: Set once a tenant or soft-deletable model has a joined-inheritance subclass (their criteria
#: then name a parent table's column); see :func:`where_entities_as_froms`.
_joined_subclasses: list[bool] = [False]


def note_joined_subclass() -> None:
    """A filtered model has a joined-inheritance subclass (called by its pattern's set-up)."""
    _joined_subclasses[0] = True


def _joined(info: Any) -> bool:
    mapper = info.mapper
    return mapper.inherits is not None and mapper.local_table is not mapper.inherits.local_table


def _missing(select: Select[Any], enclosing: frozenset[Any], joined_only: bool = False) -> list[Any]:
    """Entities in ``select``'s WHERE that it neither selects nor names as a FROM, and that are
    not correlated to an enclosing SELECT (whose criteria covers them, as 2.1 decides too);
    ``joined_only``: joined-inheritance subclasses only.

    A SELECT with ``.join()``s is left alone: an extra FROM would change the joins' left side.
    """
    if select._setup_joins:
        return []
    # an entity the SELECT selects brings its FROM: only the others need the FROM list built
    selected = {parent_entity(column) for column in raw_columns(select)}
    named = [info for info in _where_entities(select) if info not in selected]
    if not named:
        return []
    present = _surface([*select._from_obj, *select.columns_clause_froms])
    return [
        info
        for info in named
        if info.selectable not in present
        and not enclosing.intersection(info.selectable._cloned_set)
        and (not joined_only or _joined(info))
    ]


def _explicit_froms(
    select: Select[Any], enclosing: frozenset[Any], joined_only: bool = False
) -> Select[Any]:
    outer = enclosing | _surface(select.get_final_froms())

    def nested(element: Any, **kw: Any) -> Any:
        if element is not select and isinstance(element, Select):
            return _explicit_froms(element, outer, joined_only)
        return None

    result = cast("Select[Any]", replacement_traverse(select, {}, nested))
    missing = _missing(result, enclosing, joined_only)
    return result.select_from(*(info.entity for info in missing)) if missing else result


#: What cannot hold a SELECT: a walk looking for SELECTs stops there. A table's children are
#: its columns (an entity's annotated table builds them on every walk), a column and a bound
#: parameter have none that matter.
_LEAVES = (TableClause, ColumnClause, BindParameter)


def nested_selects(statement: ClauseElement) -> list[Select[Any]]:
    """Every SELECT in ``statement`` (itself included), in no particular order: what
    ``[e for e in visitors.iterate(statement) if isinstance(e, Select)]`` finds, without
    descending into tables, columns and bound parameters (most of that walk's cost)."""
    found: list[Select[Any]] = []
    stack: list[Any] = [statement]
    while stack:
        element = stack.pop()
        if type(element) is BinaryExpression:  # most WHERE terms: its children, read directly
            stack.append(element.left)
            stack.append(element.right)
            continue
        if isinstance(element, _LEAVES):
            continue
        if isinstance(element, Select):
            found.append(element)
        stack.extend(element.get_children())
    return found


def where_entities_as_froms(statement: Any, selects: Sequence[Any] | None = None) -> Any:
    """SQLAlchemy 2.0: name each ORM entity that a SELECT references only in its WHERE clause
    (``exists().where(Child.parent_id == Parent.id)``) as an explicit FROM of that SELECT.

    ``with_loader_criteria`` applies to the entities a SELECT selects or names as FROMs; from 2.1
    it also covers entities referenced only in WHERE (sqlalchemy#13070). Naming them as FROMs
    gives 2.0 the same filtering; the SQL is unchanged otherwise (the table was in that FROM list
    already, and a correlated one is skipped, as 2.1 does). A no-op on 2.0 for statements without
    such a SELECT (the common case: one walk, nothing copied).

    On 2.1 it does the same for joined-inheritance subclasses only, and only once a filtered
    model has one: 2.1's own criteria for ``exists().where(Sub.id == x)`` name the parent
    table's ``tenant_id`` without joining it to the subclass table (a cartesian product that
    matched another tenant's row); named as a FROM, the subclass brings its join.

    ``selects``: every SELECT of ``statement``, when the caller walked it already.
    """
    joined_only = SQLALCHEMY_21
    if (joined_only and not _joined_subclasses[0]) or not isinstance(
        statement, ClauseElement
    ) or isinstance(statement, StatementLambdaElement):
        return statement
    found = selects if selects is not None else nested_selects(statement)
    if not any(_missing(elem, frozenset(), joined_only) for elem in found):
        return statement
    if isinstance(statement, Select):
        return _explicit_froms(statement, frozenset(), joined_only)
    table = getattr(statement, "table", None)  # ORM UPDATE/DELETE: subqueries correlate to it
    enclosing = frozenset(_surface([table])) if isinstance(table, ClauseElement) else frozenset()

    def each(element: Any, **kw: Any) -> Any:
        return _explicit_froms(element, enclosing, joined_only) if isinstance(element, Select) else None

    return replacement_traverse(statement, {}, each)


# --- statement parts the public API does not expose -----------------------------------------
# The tenant wall must read what an INSERT/UPDATE writes and what a SELECT names in FROM, and
# write a changed copy back. SQLAlchemy offers no public accessor for these parts; the few
# private attributes read here are the same on 2.0.30 and 2.1 and are pinned by
# tests/foundation/test_foundation_compat.py, so an upgrade that moves them fails there first.


class InsertParts:
    """What an ``INSERT`` writes: ``.values()`` of one row, a multi-VALUES list, or a SELECT."""

    __slots__ = ("multi", "names", "select", "values")

    def __init__(self, statement: Any) -> None:
        self.values: Mapping[Any, Any] = getattr(statement, "_values", None) or {}
        multi = getattr(statement, "_multi_values", ())
        self.multi: list[Mapping[Any, Any]] | None = (
            [row for batch in multi for row in batch] if multi else None
        )
        self.select: Any = getattr(statement, "select", None)
        self.names: list[Any] | None = (
            list(statement._select_names) if self.select is not None else None
        )


def insert_parts(statement: Any) -> InsertParts:
    return InsertParts(statement)


def replace_insert(
    statement: Any,
    *,
    multi: Sequence[Mapping[Any, Any]] | None = None,
    select: Any = None,
    names: Sequence[Any] | None = None,
) -> Any:
    """A copy of ``statement`` with its multi-VALUES rows, or its SELECT and column names,
    replaced (RETURNING, ON CONFLICT and options kept)."""
    copy = statement._generate()
    if multi is not None:
        copy._multi_values = (list(multi),)
    if select is not None:
        copy.select = select
        copy._select_names = list(names if names is not None else statement._select_names)
    return copy


def update_values(statement: Any) -> list[Mapping[Any, Any]]:
    """The SET values of an UPDATE (``.values()`` and ``.ordered_values()``)."""
    found: list[Mapping[Any, Any]] = []
    values = getattr(statement, "_values", None)
    if values:
        found.append(values)
    ordered = getattr(statement, "_ordered_values", None)
    if ordered:
        found.append(dict(ordered))
    return found


def conflict_update(statement: Any) -> Any:
    """The ``ON CONFLICT DO UPDATE`` clause of a PostgreSQL INSERT, or None."""
    from sqlalchemy.dialects.postgresql.dml import OnConflictDoUpdate

    clause = getattr(statement, "_post_values_clause", None)
    return clause if isinstance(clause, OnConflictDoUpdate) else None


def conflict_set(clause: Any) -> list[tuple[Any, Any]]:
    """The ``SET`` pairs of an ``ON CONFLICT DO UPDATE`` clause (a list of pairs on 2.0, a dict
    on 2.1)."""
    pairs = clause.update_values_to_set
    return list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)


def with_conflict_where(statement: Any, criterion: ColumnElement[bool]) -> Any:
    """A copy of an ``INSERT … ON CONFLICT DO UPDATE`` whose update also requires
    ``criterion`` (ANDed with the statement's own ``where``)."""
    from sqlalchemy import and_
    from sqlalchemy.dialects.postgresql.dml import OnConflictDoUpdate

    clause = conflict_update(statement)
    assert clause is not None
    where = criterion if clause.update_whereclause is None else and_(
        clause.update_whereclause, criterion
    )
    target: dict[str, Any] = (
        {"constraint": clause.constraint_target}
        if clause.constraint_target is not None
        else {
            "index_elements": clause.inferred_target_elements,
            "index_where": clause.inferred_target_whereclause,
        }
    )
    new = OnConflictDoUpdate(set_=dict(clause.update_values_to_set), where=where, **target)
    copy = statement._generate()
    copy._post_values_clause = new
    return copy


def explicit_froms(select: Select[Any]) -> tuple[Any, ...]:
    """What ``select`` names in ``select_from()`` (not the FROMs its columns imply)."""
    return tuple(select._from_obj)


def is_orphan(state: Any) -> bool:
    """Whether the flush will delete ``state`` as an orphan of a ``delete-orphan`` cascade
    (no parent holds it any more), as SQLAlchemy's unit of work decides it."""
    return bool(state.mapper._is_orphan(state))


def walks_statements() -> bool:
    """Whether the wall must look at every SELECT nested in a statement: on 2.0, and on 2.1 once
    a filtered model has a joined-inheritance subclass (see :func:`where_entities_as_froms`)."""
    return not SQLALCHEMY_21 or _joined_subclasses[0]


@functools.cache
def compound_options_in_cache_key() -> bool:
    """Whether a UNION's cache key includes its options. Before sqlalchemy#12905 (fixed in 2.0.44
    and 2.1) it did not: a UNION compiled once without the tenant criteria was reused with them
    (and the reverse)."""
    from sqlalchemy import false, literal, select, true, union_all
    from sqlalchemy.orm import with_loader_criteria

    class Probe:
        pass

    probe = union_all(select(literal(1)), select(literal(2)))
    one = probe.options(with_loader_criteria(Probe, lambda cls: true()))._generate_cache_key()
    two = probe.options(with_loader_criteria(Probe, lambda cls: false()))._generate_cache_key()
    return one != two


def raw_columns(select: Select[Any]) -> tuple[Any, ...]:
    """What ``select(...)`` was given: entities, columns and FROM objects, unexpanded."""
    return tuple(select._raw_columns)


def parent_entity(element: Any) -> Any:
    """The ORM entity an element of a SELECT (a column, an entity's table) was taken from, or
    None for plain Core tables and columns: the ``parententity`` annotation the ORM puts on them."""
    return element._annotations.get("parententity")



class _PerRowDefault(ColumnElementColumnDefault):
    """See :func:`per_row_update_default`."""

    is_callable = True

    def __new__(cls, *args: Any, **kw: Any) -> Any:
        return object.__new__(cls)

    def _copy(self) -> _PerRowDefault:
        copy: _PerRowDefault = _PerRowDefault(self.arg, for_update=self.for_update)
        return copy


def per_row_update_default(element: Any) -> Any:
    """A column ``onupdate`` that is rendered like a SQL expression default (``element`` is
    compiled into each UPDATE that does not set the column) and, when that compilation called
    :func:`prefetch_update_default`, is *called* per row with the execution context like a Python
    default. ``element`` is a ``ColumnElement`` with ``__call__(context)``.

    Blind indexes use it: a SQL default alone cannot hash in Python, a Python default alone is
    sent with every UPDATE (the stored index would be overwritten when the plaintext is not
    set). SQLAlchemy reads ``is_clause_element`` when compiling and ``is_callable`` when
    executing (``_onupdate_description_tuple``), on 2.0.30 and 2.1 alike.
    """
    return _PerRowDefault(element, for_update=True)


def attach_default(default: Any, column: Any) -> None:
    """Make ``default`` (a ``ColumnDefault`` or :func:`per_row_update_default`) the ``default``
    or ``onupdate`` of a column that exists already: the constructor's keywords are the only
    public way, and a blind index's companion may be declared by the user."""
    default._set_parent(column)


def prefetch_update_default(compiler: Any, column: Any) -> None:
    """Mark ``column``'s ``onupdate`` (see :func:`per_row_update_default`) to be computed in
    Python for every row of the UPDATE being compiled."""
    compiler.update_prefetch.append(column)
