"""Request context: the current tenant, actor and admin scope.

Values live in :mod:`contextvars`, so each thread and each asyncio task sees its own, and nested
scopes restore the outer value on exit. ``session.info`` (keys ``tenant_id``, ``actor_id``,
``all_tenants``) wins over the scope, so a session can be pinned explicitly. The resolution rule
lives here and nowhere else.

PostgreSQL learns the context through ``set_config(name, value, true)``: transaction-local, so a
pooled connection never carries a tenant or an actor into its next transaction. This module is
the one owner of those settings. It sends them when a transaction begins, remembers what the
database holds, and sends them again before the next statement or flush whenever the scope
changed inside the transaction (a tenant switch, an actor set after a first query) or a
savepoint that changed them ended (a rolled-back savepoint undoes ``set_config``). The ORM
filter and the row-level security policy therefore never disagree. With psycopg 3 the settings
share the round trip of the statement that follows them (:mod:`sa_patterns._pipeline`).
"""

from __future__ import annotations

import json
import uuid
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy.engine import Connection
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from ._pipeline import defer_settings, discard_settings
from .errors import ConfigurationError, TenantRequired
from .options import ALL_TENANTS, HARD_DELETE, INCLUDE_DELETED
from .pattern import Pattern

__all__ = [
    "ACTOR_SETTING",
    "ADMIN_KEY_SETTING",
    "ALL_TENANTS_SETTING",
    "REQUEST_SETTING",
    "TENANT_SETTING",
    "StatementContext",
    "TenantId",
    "actor_scope",
    "all_tenants",
    "current_actor",
    "current_request_metadata",
    "current_tenant",
    "is_all_tenants",
    "require_tenant",
    "statement_context",
    "sync_settings",
    "tenant_scope",
    "transaction_settings",
]

TenantId: TypeAlias = "int | str | uuid.UUID"

#: Names of the transaction-local settings PostgreSQL sees (``current_setting(...)``).
TENANT_SETTING = "app.tenant_id"
ACTOR_SETTING = "app.actor_id"
REQUEST_SETTING = "app.request"
#: Asks the admin policy (``__rls_admin_role__``) to lift the tenant filter. Any role can *set*
#: it; only members of the admin role get a policy that reads it, so an app role cannot forge it.
ALL_TENANTS_SETTING = "app.all_tenants"
#: The key ``all_tenants(key=...)`` presents; a keyed admin policy (:mod:`sa_patterns.tenancy.
#: admin_keys`) compares its hash with the stored ones, so SQL that sets it cannot guess one.
ADMIN_KEY_SETTING = "app.admin_key"
#: The shortest key ``all_tenants(key=...)`` accepts (characters): not guessable.
MIN_ADMIN_KEY = 32

#: The scope in force: (tenant, actor, request metadata, all tenants: False, True or the admin
#: key presented). One variable, read once per statement; each scope function sets a new tuple
#: and restores the outer one on exit.
_Scope = tuple["TenantId | None", "str | None", "Mapping[str, str] | None", "bool | str"]
_scope: ContextVar[_Scope] = ContextVar("sa_patterns_scope", default=(None, None, None, False))


def _check_tenant(value: object, where: str) -> TenantId:
    # bool is an int subclass; a True tenant is always a bug.
    if isinstance(value, bool) or not isinstance(value, (int, str, uuid.UUID)):
        raise ConfigurationError(
            f"{where}: a tenant id must be an int, str or uuid.UUID, got {type(value).__name__}. "
            "Pass the tenant's key, not the tenant object; use all_tenants() for admin work."
        )
    if isinstance(value, str) and not value:
        raise ConfigurationError(f"{where}: a tenant id must not be an empty string.")
    _check_text(value, where, "tenant id")
    return value


def _check_text(value: object, where: str, what: str) -> None:
    # PostgreSQL text cannot hold NUL: refuse it here with a clear error, not a driver one.
    if isinstance(value, str) and "\x00" in value:
        raise ConfigurationError(f"{where}: a {what} must not contain a NUL character.")


def _check_actor(value: object, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str, uuid.UUID)):
        raise ConfigurationError(
            f"{where}: an actor id must be an int, str or uuid.UUID, got {type(value).__name__}."
        )
    _check_text(value, where, "actor id")
    return str(value)


@contextmanager
def tenant_scope(tenant_id: TenantId) -> Iterator[TenantId]:
    """Run the block as ``tenant_id``: tenant models are filtered to it and filled with it."""
    if tenant_id is None:
        raise ConfigurationError(
            "tenant_scope(None): a scope needs a tenant. Use sa_patterns.all_tenants() for "
            "deliberate cross-tenant work."
        )
    _, actor, request, admin = _scope.get()
    token = _scope.set((_check_tenant(tenant_id, "tenant_scope()"), actor, request, admin))
    try:
        yield tenant_id
    finally:
        _scope.reset(token)


@contextmanager
def actor_scope(actor_id: object, **metadata: object) -> Iterator[str | None]:
    """Record ``actor_id`` (and optional request metadata) as who makes the block's changes."""
    actor = _check_actor(actor_id, "actor_scope()")
    meta = {str(k): str(v) for k, v in metadata.items()} or None
    for key, value in (meta or {}).items():
        _check_text(key + value, "actor_scope()", "request metadata value")
    tenant, _, _, admin = _scope.get()
    token = _scope.set((tenant, actor, meta, admin))
    try:
        yield actor
    finally:
        _scope.reset(token)


@contextmanager
def all_tenants(*, key: str | None = None) -> Iterator[None]:
    """Deliberately lift tenant filtering for the block (admin work, migrations, reports).

    The ORM filter is lifted for any role; the database's only for the admin role, or, with
    ``key``, for the app role when the key is one registered with
    :func:`sa_patterns.tenancy.admin_keys.add_admin_key` (administrators who are users of the
    app, on its pool): SQL that sets the setting itself cannot produce a valid key.
    """
    if key is not None and (
        not isinstance(key, str) or len(key) < MIN_ADMIN_KEY or "\x00" in key
    ):
        raise ConfigurationError(
            f"all_tenants(key=...): a key is a secret string of at least {MIN_ADMIN_KEY} "
            "characters (sa-patterns admin-key add prints one); load it from the environment."
        )
    tenant, actor, request, _ = _scope.get()
    token = _scope.set((tenant, actor, request, key if key is not None else True))
    try:
        yield
    finally:
        _scope.reset(token)


def _info(session: Session | None) -> Mapping[str, Any]:
    return session.info if session is not None else {}


def current_tenant(session: Session | None = None) -> TenantId | None:
    """The tenant in force: ``session.info["tenant_id"]`` if set, else the scope's."""
    info = _info(session)
    if info.get("tenant_id") is not None:
        return _check_tenant(info["tenant_id"], 'session.info["tenant_id"]')
    return _scope.get()[0]


def require_tenant(session: Session | None = None, *, what: str = "this statement") -> TenantId:
    """The tenant in force, or :class:`TenantRequired` (fail closed)."""
    tenant = current_tenant(session)
    if tenant is None:
        raise TenantRequired(
            f"{what} touches a tenant-scoped model but no tenant is in scope. Wrap the work in "
            "sa_patterns.tenant_scope(tenant_id), set session.info['tenant_id'], or use "
            "sa_patterns.all_tenants() for deliberate cross-tenant work."
        )
    return tenant


def is_all_tenants(session: Session | None = None) -> bool:
    """True inside :func:`all_tenants` or with ``session.info["all_tenants"]`` set."""
    info = _info(session)
    if "all_tenants" in info:
        return bool(info["all_tenants"])
    return bool(_scope.get()[3])


def current_actor(session: Session | None = None) -> str | None:
    """The actor in force: ``session.info["actor_id"]`` if set, else the scope's."""
    info = _info(session)
    if info.get("actor_id") is not None:
        return _check_actor(info["actor_id"], 'session.info["actor_id"]')
    return _scope.get()[1]


def current_request_metadata(session: Session | None = None) -> Mapping[str, str] | None:
    """Request metadata from :func:`actor_scope` keywords or ``session.info["request"]``."""
    info = _info(session)
    if info.get("request") is not None:
        return {str(k): str(v) for k, v in dict(info["request"]).items()}
    return _scope.get()[2]


# --- one statement's context ----------------------------------------------------------------


@dataclass(frozen=True)
class StatementContext:
    """What one ORM statement runs under, resolved once and handed to every pattern's hook:
    the tenant in force, whether tenant filtering is lifted (``all_tenants()``,
    ``session.info["all_tenants"]`` or the statement's ``all_tenants=True``), and the
    statement's soft-delete opt-outs."""

    state: ORMExecuteState
    tenant: TenantId | None
    admin: bool
    include_deleted: bool
    hard_delete: bool

    @property
    def session(self) -> Session:
        return self.state.session


def statement_context(state: ORMExecuteState) -> StatementContext:
    tenant, _, _, admin = _key(state.session)
    options = state.execution_options
    return StatementContext(
        state,
        tenant,
        bool(admin) or bool(options.get(ALL_TENANTS, False)),
        bool(options.get(INCLUDE_DELETED, False)),
        bool(options.get(HARD_DELETE, False)),
    )


# --- the settings PostgreSQL holds ---------------------------------------------------------

#: What a session's context is, in the form compared on every statement (cheap to build).
_Key = _Scope
# What each session's current transaction has told PostgreSQL (None: not known, send again).
_held: weakref.WeakKeyDictionary[Session, _Key | None] = weakref.WeakKeyDictionary()
_UNKNOWN: Any = object()  # no transaction: absent from _held
# What a savepoint started with, to tell whether its end may have changed what is held.
_at_savepoint: weakref.WeakKeyDictionary[SessionTransaction, _Key | None] = (
    weakref.WeakKeyDictionary()
)


def _key(session: Session) -> _Key:
    """The session's context; the scope's own tuple when ``session.info`` overrides nothing
    (the common case: one variable read)."""
    info = session.info
    if (
        "tenant_id" not in info
        and "actor_id" not in info
        and "request" not in info
        and "all_tenants" not in info
    ):
        return _scope.get()
    return (
        current_tenant(session),
        current_actor(session),
        current_request_metadata(session),
        bool(info["all_tenants"]) if "all_tenants" in info else _scope.get()[3],  # keeps a key
    )


def _values(key: _Key) -> dict[str, str]:
    tenant, actor, meta, admin = key
    return {
        TENANT_SETTING: "" if tenant is None else str(tenant),
        ACTOR_SETTING: "" if actor is None else str(actor),
        REQUEST_SETTING: json.dumps(dict(meta), sort_keys=True) if meta else "",
        ALL_TENANTS_SETTING: "on" if admin else "",
        ADMIN_KEY_SETTING: admin if isinstance(admin, str) else "",
    }


def transaction_settings(session: Session) -> dict[str, str]:
    """The settings the session's context asks for, without the empty ones."""
    return {name: value for name, value in _values(_key(session)).items() if value}


# The connections a session's transaction deferred settings on (discarded when it ends).
_deferred: weakref.WeakKeyDictionary[Session, list[Connection]] = weakref.WeakKeyDictionary()


def _send(
    session: Session, connection: Connection, key: _Key, values: dict[str, str] | None = None
) -> None:
    # rides with the next statement: no round trip
    defer_settings(connection, _values(key) if values is None else values)
    deferred = _deferred.get(session)
    if deferred is None:
        _deferred[session] = [connection]
    elif connection not in deferred:
        deferred.append(connection)


#: The context of a scope that sets nothing (no tenant, actor, request or admin flag).
_EMPTY: _Key = (None, None, None, False)


def _after_begin(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    if transaction.nested:
        _at_savepoint[transaction] = _held.get(session)
        return  # a savepoint starts with what its transaction holds
    key = _key(session)
    if key != _EMPTY:
        values = _values(key)
        if any(values.values()):
            _send(session, connection, key, values)  # settings start empty: else nothing
    _held[session] = key


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        _held.pop(session, None)
        for connection in _deferred.pop(session, ()):
            discard_settings(connection)
    elif transaction in _at_savepoint and _at_savepoint.pop(transaction) != _held.get(session):
        # changed inside the savepoint: a rollback undid it, a release kept it; send again
        _held[session] = None


def sync_settings(session: Session, *, lifted: bool = False) -> None:
    """Tell PostgreSQL the context in force now, if it is not what the transaction holds.

    Called before every statement and flush of an installed session. Only when the scope
    changed inside the transaction, and then the ``set_config`` waits for the next statement
    and shares its round trip (:mod:`sa_patterns._pipeline`). ``lifted``: the statement asked
    for ``all_tenants=True``, for itself only (the next statement sends the scope's again).
    """
    held = _held.get(session, _UNKNOWN)  # one weak-key lookup on every statement
    if held is _UNKNOWN:
        if not lifted:
            return  # no transaction yet: after_begin sends the settings
        session.connection()  # begin now (after_begin records the scope's), then lift below
        held = _held[session]
    key = _key(session)
    if lifted and not key[3]:
        key = (key[0], key[1], key[2], True)
    if key != held:
        _send(session, session.connection(), key)
        _held[session] = key


def _do_orm_execute(state: ORMExecuteState) -> None:
    # raw SQL is filtered by RLS too: every statement
    sync_settings(state.session, lifted=bool(state.execution_options.get(ALL_TENANTS, False)))


def _before_flush(session: Session, flush_context: object, instances: object) -> None:
    sync_settings(session)  # a flush's INSERT/UPDATE is no ORM statement: sync before it


#: Composed first by :func:`sa_patterns.install`, so every other hook runs with the settings in
#: force.
PATTERN = Pattern(
    "context",
    listeners=(
        ("after_begin", _after_begin),
        ("after_transaction_end", _after_transaction_end),
        ("do_orm_execute", _do_orm_execute),
        ("before_flush", _before_flush),
    ),
)
