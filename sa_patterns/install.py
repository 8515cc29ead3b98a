"""``install()``: attach the toolkit's session listeners to the factory the user passes in.

Nothing is registered at import time and nothing global is touched: listeners go on the
``sessionmaker``'s private class, a ``Session`` subclass, or the private sync class made for an
``async_sessionmaker``. ``install`` does not know what the patterns do. Each pattern module may
expose three optional hooks, and ``install`` composes them:

``SESSION_LISTENERS``
    ``(event_name, fn)`` or ``(event_name, fn, listen_kwargs)`` tuples, attached in order.
``LOADER_CRITERIA``
    ``fn(state) -> iterable of ORM options``; all patterns' options are added by **one**
    ``do_orm_execute`` hook, registered after the patterns' own listeners so that a statement a
    pattern rewrote is filtered too.
``TRANSACTION_SETTINGS``
    ``fn(session) -> {setting: value}``; all values are sent in **one** ``SELECT set_config(...)``
    per transaction, as bound parameters, transaction-local.
"""

from __future__ import annotations

import importlib
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import (
    ORMExecuteState,
    Session,
    SessionTransaction,
    scoped_session,
    sessionmaker,
)
from sqlalchemy.orm.interfaces import ORMOption

from ._compat import where_entities_as_froms
from .errors import ConfigurationError

__all__ = ["PATTERN_MODULES", "install", "installed", "uninstall"]

#: The modules whose hooks ``install`` composes, in order. A pattern joins by adding its module.
PATTERN_MODULES: tuple[str, ...] = (
    "sa_patterns.context",
    "sa_patterns.typed_json",
    "sa_patterns.soft_delete",
    "sa_patterns.tenancy",
    "sa_patterns.audit",
    "sa_patterns.views",
    "sa_patterns.encryption.blind_index",
)

Listener = tuple[str, Callable[..., Any], dict[str, Any]]
CriteriaHook = Callable[[ORMExecuteState], Iterable[ORMOption]]
SettingsHook = Callable[[Session], Mapping[str, str]]

T = TypeVar("T")

_installed: weakref.WeakKeyDictionary[Any, list[tuple[str, Callable[..., Any]]]] = (
    weakref.WeakKeyDictionary()
)


def _load_patterns() -> list[ModuleType]:
    modules = []
    for name in PATTERN_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:  # a pattern not built in this version
            if exc.name != name:
                raise
    return modules


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
            sync_cls = type("Session", (sync_cls or Session,), {})
            target.kw["sync_session_class"] = sync_cls
        return sync_cls
    if isinstance(target, type) and issubclass(target, AsyncSession):
        if target is AsyncSession:
            raise ConfigurationError(
                "install(AsyncSession) would change every async session in the process. Pass an "
                "async_sessionmaker or your own AsyncSession subclass."
            )
        if target.sync_session_class is Session:
            target.sync_session_class = type("Session", (Session,), {})
        return target.sync_session_class
    if isinstance(target, AsyncSession):
        return target.sync_session
    if isinstance(target, type) and issubclass(target, Session):
        if target is Session:
            raise ConfigurationError(
                "install(Session) would change every session in the process. Pass a "
                "sessionmaker or your own Session subclass."
            )
        return target
    if isinstance(target, Session):
        return target
    raise ConfigurationError(
        f"install() needs a sessionmaker, async_sessionmaker, scoped_session, a Session or "
        f"AsyncSession subclass, or a session; got {type(target).__name__}."
    )


def _settings_hook(hooks: Sequence[SettingsHook]) -> Callable[..., None]:
    def after_begin(
        session: Session, transaction: SessionTransaction, connection: Connection
    ) -> None:
        settings: dict[str, str] = {}
        for hook in hooks:
            settings.update(hook(session))
        if not settings:
            return  # nothing to say: transaction-local settings start empty anyway
        names = sorted(settings)
        columns = ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(names)))
        params: dict[str, str] = {}
        for i, name in enumerate(names):
            params[f"n{i}"] = name
            params[f"v{i}"] = settings[name]
        connection.execute(text(f"SELECT {columns}"), params)

    return after_begin


def _criteria_hook(hooks: Sequence[CriteriaHook]) -> Callable[[ORMExecuteState], None]:
    def do_orm_execute(state: ORMExecuteState) -> None:
        if not (state.is_select or state.is_update or state.is_delete):
            return
        options: list[ORMOption] = []
        for hook in hooks:
            options.extend(hook(state))
        if options:
            state.statement = where_entities_as_froms(state.statement).options(*options)

    return do_orm_execute


def _listeners(modules: Iterable[ModuleType]) -> list[Listener]:
    listeners: list[Listener] = []
    criteria: list[CriteriaHook] = []
    settings: list[SettingsHook] = []
    for module in modules:
        for entry in getattr(module, "SESSION_LISTENERS", ()):
            name, fn, *rest = entry
            listeners.append((name, fn, dict(rest[0]) if rest else {}))
        if hasattr(module, "LOADER_CRITERIA"):
            criteria.append(module.LOADER_CRITERIA)
        if hasattr(module, "TRANSACTION_SETTINGS"):
            settings.append(module.TRANSACTION_SETTINGS)
    if criteria:
        listeners.append(("do_orm_execute", _criteria_hook(criteria), {}))
    if settings:
        listeners.append(("after_begin", _settings_hook(settings), {}))
    return listeners


def install(target: T) -> T:
    """Attach every pattern's session listeners to ``target``; calling it again does nothing.

    ``target`` is a ``sessionmaker``, ``async_sessionmaker``, ``scoped_session``, a ``Session``
    or ``AsyncSession`` subclass, or a single session. Returns ``target`` so it can wrap a
    factory inline: ``Session = sa_patterns.install(sessionmaker(engine))``.
    """
    resolved = _resolve(target)
    if resolved in _installed:
        return target
    attached: list[tuple[str, Callable[..., Any]]] = []
    for name, fn, kwargs in _listeners(_load_patterns()):
        event.listen(resolved, name, fn, **kwargs)
        attached.append((name, fn))
    _installed[resolved] = attached
    return target


def uninstall(target: object) -> None:
    """Remove what :func:`install` attached to ``target`` (a no-op if nothing was)."""
    resolved = _resolve(target)
    for name, fn in _installed.pop(resolved, []):
        event.remove(resolved, name, fn)


def installed(target: object) -> bool:
    """True when :func:`install` has been applied to ``target``."""
    return _resolve(target) in _installed
