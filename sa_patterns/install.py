"""``install()``: attach the patterns' session hooks to the factory the user passes in.

Nothing is registered at import time and nothing global is touched: listeners go on the
``sessionmaker``'s private class, a ``Session`` subclass, or the private sync class made for an
``async_sessionmaker``. ``install`` does not know what the patterns do; each is a
:class:`~sa_patterns.pattern.Pattern` object, and ``install`` composes them in order:

* their listeners, attached in order (:mod:`sa_patterns.context`, which keeps PostgreSQL's
  settings in step with the scope, first);
* their loader criteria, added by **one** ``do_orm_execute`` hook registered after the patterns'
  own listeners, so that a statement a pattern rewrote is filtered too; the same hook puts their
  table conditions into explicit joins (:mod:`sa_patterns._joins`);
* their checks of the legacy ``Session.bulk_*`` methods, which skip every session event: the
  installed class gets guarded versions that refuse, or send the rows through the 2.0
  statements the hooks scope.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from sqlalchemy import event, insert, inspect, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session, scoped_session, sessionmaker
from sqlalchemy.orm.interfaces import ORMOption, UserDefinedOption
from sqlalchemy.sql import ClauseElement, ColumnElement
from sqlalchemy.sql.selectable import CompoundSelect
from sqlalchemy.sql.visitors import replacement_traverse

from ._compat import (
    SQLALCHEMY_21,
    compound_options_in_cache_key,
    insert_parts,
    nested_selects,
    walks_statements,
    where_entities_as_froms,
)
from ._joins import scope_explicit_joins
from .context import statement_context
from .errors import ConfigurationError, UnsupportedStatement
from .pattern import BulkCheck, CriteriaHook, FromCriteriaHook, Pattern
from .tenancy.wall import WallMode, wall_pattern

__all__ = ["default_patterns", "install", "installed", "uninstall"]

T = TypeVar("T")

_BULK_METHODS = ("bulk_insert_mappings", "bulk_update_mappings", "bulk_save_objects")


class _Installed:
    __slots__ = ("listeners", "methods")

    def __init__(self) -> None:
        self.listeners: list[tuple[str, Callable[..., Any]]] = []
        #: (name, what the target itself held before, or None)
        self.methods: list[tuple[str, Any]] = []


_installed: weakref.WeakKeyDictionary[Any, _Installed] = weakref.WeakKeyDictionary()


def default_patterns() -> tuple[Pattern, ...]:
    """Every pattern of the toolkit, in the order their hooks run."""
    from . import context, soft_delete, tenancy, typed_json, views
    from .encryption import blind_index

    # tenancy before soft delete: its flush check must see session.delete() of another
    # tenant's object before soft delete turns it into an UPDATE
    return (
        context.PATTERN,
        typed_json.PATTERN,
        tenancy.PATTERN,
        soft_delete.PATTERN,
        views.PATTERN,
        blind_index.PATTERN,
    )


def _resolve(target: object) -> type[Session] | Session:
    """The sync ``Session`` class (or instance) whose events we listen to."""
    if isinstance(target, scoped_session):
        target = target.session_factory
    if isinstance(target, sessionmaker):
        # sessionmaker already made a private subclass for itself: listening there is local.
        cls: type[Session] = target.class_
        return cls
    if isinstance(target, async_sessionmaker):
        sync_cls = target.kw.get("sync_session_class")
        if sync_cls is None or sync_cls is Session:
            # a private subclass of the class the AsyncSession class runs on (SQLModel's
            # AsyncSession runs on SQLModel's Session, whose exec() it calls)
            base: type[Session] = (
                getattr(target.class_, "sync_session_class", Session) if sync_cls is None else sync_cls
            )
            sync_cls = type("Session", (base,), {})
            target.kw["sync_session_class"] = sync_cls
        return sync_cls
    if isinstance(target, type) and issubclass(target, AsyncSession):
        if _library_class(target):
            raise ConfigurationError(
                f"install({target.__name__}) would change every async session in the process "
                f"({target.__module__}). Pass an async_sessionmaker or your own AsyncSession subclass."
            )
        if _library_class(target.sync_session_class):
            # the library's Session it runs on (sqlalchemy's, SQLModel's) stays untouched
            target.sync_session_class = type("Session", (target.sync_session_class,), {})
        return target.sync_session_class
    if isinstance(target, AsyncSession):
        return target.sync_session
    if isinstance(target, type) and issubclass(target, Session):
        if _library_class(target):
            raise ConfigurationError(
                f"install({target.__name__}) would change every session in the process "
                f"({target.__module__}). Pass a sessionmaker or your own Session subclass."
            )
        return target
    if isinstance(target, Session):
        return target
    raise ConfigurationError(
        f"install() needs a sessionmaker, async_sessionmaker, scoped_session, a Session or "
        f"AsyncSession subclass, or a session; got {type(target).__name__}."
    )


def _library_class(cls: type) -> bool:
    """A session class a library defines (SQLAlchemy's, SQLModel's): shared by every user of it
    in the process, so installing on it would reach sessions that are not the app's."""
    return cls.__module__.split(".")[0] in {"sqlalchemy", "sqlmodel"}


class _Composed(UserDefinedOption):
    """Marks an UPDATE/DELETE the composed hook has scoped. SQLAlchemy copies its options into
    the SELECT it derives from it to synchronize the session: that arrives scoped already, and
    is left alone."""


_COMPOSED = _Composed()


def _criteria_hook(
    criteria: Sequence[CriteriaHook], froms: Sequence[FromCriteriaHook]
) -> Callable[[ORMExecuteState], None]:
    def do_orm_execute(state: ORMExecuteState) -> None:
        if state.is_insert:
            if insert_parts(state.statement).select is None:
                return  # only INSERT ... SELECT reads rows
        elif not (state.is_select or state.is_update or state.is_delete):
            return
        if any(isinstance(option, _Composed) for option in state.user_defined_options):
            return
        context = statement_context(state)  # resolved once, for every pattern
        options: list[ORMOption] = []
        for hook in criteria:
            options.extend(hook(context))
        statement = state.statement
        loader = state.is_relationship_load or state.is_column_load
        # one walk over the nested SELECTs, shared by the two rewrites that need it, and taken
        # only when one will run: a load whose criteria came with its parent needs neither
        selects = (
            nested_selects(statement)
            if (options or (froms and not loader))
            and walks_statements()
            and isinstance(statement, ClauseElement)
            else None
        )
        if froms and not loader:

            def conditions(from_: Any) -> list[ColumnElement[bool]]:
                return [condition for hook in froms for condition in hook(context, from_)]

            scoped = scope_explicit_joins(
                statement, conditions, deep=not SQLALCHEMY_21, selects=selects
            )
            if scoped is not statement:
                statement, selects = scoped, None
        if options:
            if state.is_update or state.is_delete:
                statement = _join_parent_tables(state, statement)
            if isinstance(statement, CompoundSelect) and not compound_options_in_cache_key():
                statement = _options_in_members(statement, options)
            if state.is_update or state.is_delete:  # SQLAlchemy derives SELECTs from these
                options.append(_COMPOSED)
            statement = where_entities_as_froms(statement, selects).options(*options)
        if statement is not state.statement:
            state.statement = statement

    return do_orm_execute


def _options_in_members(union: Any, options: Sequence[ORMOption]) -> Any:
    """Before sqlalchemy#12905 (2.0.44) a UNION's cache key ignored its options, so its SQL
    compiled with one tenant's criteria (or none) was reused for another. Each SELECT of the
    UNION carries the options too: they do nothing there (only the UNION's apply), but they are
    in its cache key."""
    members = {member: member.options(*options) for member in union.selects}
    return replacement_traverse(union, {}, lambda e, **kw: members.get(e))  # type: ignore[call-overload]


def _join_parent_tables(state: ORMExecuteState, statement: Any) -> Any:
    """ORM UPDATE/DELETE of a joined-inheritance subclass: the criteria name columns of its
    parents' tables (``tenant_id``, ``deleted_at``), which SQLAlchemy adds to the statement with
    no join condition: a cartesian product that reached every tenant's rows. The inheritance
    conditions join them."""
    mapper = state.bind_mapper
    conditions = []
    while mapper is not None and mapper.inherits is not None:
        if mapper.inherit_condition is not None and mapper.local_table is not mapper.inherits.local_table:
            conditions.append(mapper.inherit_condition)
        mapper = mapper.inherits
    return statement.where(*conditions) if conditions else statement


def _bulk_methods(
    checks: Sequence[BulkCheck], original: Callable[[str], Callable[..., Any]]
) -> dict[str, Callable[..., Any]]:
    """Guarded ``bulk_*`` methods; ``original(name)`` gives the method they stand in for."""

    def scoped(session: Session, method: str, mapper: Any) -> bool:
        reroute = False
        for check in checks:
            reroute = check(session, method, mapper) or reroute
        return reroute

    def rerouted(method: str, statement: Callable[[Any], Any]) -> Callable[..., None]:
        """``bulk_insert_mappings``/``bulk_update_mappings``: as ``execute(statement, rows)``
        when a pattern asks, which the hooks scope."""

        def bulk_mappings(
            self: Session, mapper: Any, mappings: Iterable[dict[str, Any]], *args: Any, **kw: Any
        ) -> None:
            target = inspect(mapper)
            if scoped(self, method, target):
                rows = list(mappings)
                if rows:
                    self.execute(statement(target), rows)
                return None
            return original(method)(self, mapper, mappings, *args, **kw)  # type: ignore[no-any-return]

        return bulk_mappings

    def bulk_save_objects(self: Session, objects: Iterable[object], *args: Any, **kw: Any) -> None:
        objects = list(objects)
        for mapper in {inspect(obj).mapper for obj in objects}:
            if scoped(self, "bulk_save_objects", mapper):
                raise UnsupportedStatement(
                    f"bulk_save_objects() of {mapper.class_.__name__} skips every session hook, "
                    "so the tenant wall cannot see it. Use session.add_all(objects), or "
                    "session.execute(insert(Model), rows) for speed."
                )
        return original("bulk_save_objects")(self, objects, *args, **kw)  # type: ignore[no-any-return]

    return {
        "bulk_insert_mappings": rerouted("bulk_insert_mappings", insert),
        "bulk_update_mappings": rerouted("bulk_update_mappings", update),
        "bulk_save_objects": bulk_save_objects,
    }


def install(
    target: T, *, patterns: Sequence[Pattern] | None = None, wall: WallMode = "warn"
) -> T:
    """Attach the patterns' session hooks to ``target``; calling it again does nothing.

    ``target`` is a ``sessionmaker``, ``async_sessionmaker``, ``scoped_session``, a ``Session``
    or ``AsyncSession`` subclass, or a single session. ``patterns`` defaults to every pattern
    of the toolkit (:func:`default_patterns`). Returns ``target`` so it can wrap a factory
    inline: ``Session = sa_patterns.install(sessionmaker(engine))``.

    ``wall``: at the first transaction on each engine, check that its role is subject to
    row-level security (not a superuser, not ``BYPASSRLS``, not the owner of a table whose RLS
    is not forced). ``"warn"`` (default) warns once with :class:`DatabaseWallWarning`,
    ``"strict"`` (production) raises :class:`DatabaseWallDown`, ``"off"`` skips the check.
    """
    resolved = _resolve(target)
    if resolved in _installed:
        return target
    chosen = default_patterns() if patterns is None else tuple(patterns)
    if wall != "off":
        chosen += (wall_pattern(wall),)
    done = _Installed()
    listeners: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []
    for pattern in chosen:
        for entry in pattern.listeners:
            name, fn, *rest = entry
            listeners.append((name, fn, dict(rest[0]) if rest else {}))
    criteria = [p.loader_criteria for p in chosen if p.loader_criteria is not None]
    froms = [p.from_criteria for p in chosen if p.from_criteria is not None]
    if criteria or froms:
        listeners.append(("do_orm_execute", _criteria_hook(criteria, froms), {}))
    for name, fn, kwargs in listeners:
        event.listen(resolved, name, fn, **kwargs)
        done.listeners.append((name, fn))
    checks = [p.bulk_check for p in chosen if p.bulk_check is not None]
    if checks:
        _guard_bulk(resolved, checks, done)
    _installed[resolved] = done
    return target


def _guard_bulk(
    resolved: type[Session] | Session, checks: Sequence[BulkCheck], done: _Installed
) -> None:
    """Guarded ``bulk_*`` methods on the installed class (or session), each standing in for
    what the target held before: its own method, or the inherited one."""
    own = vars(resolved)
    previous = {name: own.get(name) for name in _BULK_METHODS}
    if isinstance(resolved, Session):

        def original(name: str) -> Callable[..., Any]:
            held = previous[name]
            if held is not None:
                return lambda _self, *a, **kw: held(*a, **kw)
            return getattr(type(resolved), name)  # type: ignore[no-any-return]

        for name, fn in _bulk_methods(checks, original).items():
            setattr(resolved, name, types.MethodType(fn, resolved))
            done.methods.append((name, previous[name]))
        return
    bases = resolved.__mro__[1:]

    def inherited(name: str) -> Callable[..., Any]:
        held = previous[name]
        if held is not None:
            return held  # type: ignore[no-any-return]
        for base in bases:
            if name in vars(base):
                return vars(base)[name]  # type: ignore[no-any-return]
        raise AttributeError(name)

    for name, fn in _bulk_methods(checks, inherited).items():
        setattr(resolved, name, fn)
        done.methods.append((name, previous[name]))


def uninstall(target: object) -> None:
    """Remove what :func:`install` attached to ``target`` (a no-op if nothing was)."""
    resolved = _resolve(target)
    done = _installed.pop(resolved, None)
    if done is None:
        return
    for name, fn in done.listeners:
        event.remove(resolved, name, fn)
    for name, held in done.methods:
        if held is None:
            delattr(resolved, name)
        else:
            setattr(resolved, name, held)


def installed(target: object) -> bool:
    """True when :func:`install` has been applied to ``target``."""
    return _resolve(target) in _installed
