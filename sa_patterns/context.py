"""Request context: the current tenant, actor and admin scope.

Values live in :mod:`contextvars`, so each thread and each asyncio task sees its own, and nested
scopes restore the outer value on exit. ``session.info`` (keys ``tenant_id``, ``actor_id``,
``all_tenants``) wins over the scope, so a session can be pinned explicitly. The resolution rule
lives here and nowhere else.

PostgreSQL learns the context once per transaction through ``set_config(name, value, true)``
(see :mod:`sa_patterns.install`): transaction-local, so a pooled connection never carries a
tenant or an actor into its next transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeAlias

from sqlalchemy.orm import Session

from .errors import ConfigurationError, TenantRequired

__all__ = [
    "ACTOR_SETTING",
    "REQUEST_SETTING",
    "TENANT_SETTING",
    "TenantId",
    "actor_scope",
    "all_tenants",
    "current_actor",
    "current_request_metadata",
    "current_tenant",
    "is_all_tenants",
    "require_tenant",
    "tenant_scope",
    "transaction_settings",
]

TenantId: TypeAlias = "int | str | uuid.UUID"

#: Names of the transaction-local settings PostgreSQL sees (``current_setting(...)``).
TENANT_SETTING = "app.tenant_id"
ACTOR_SETTING = "app.actor_id"
REQUEST_SETTING = "app.request"

_tenant: ContextVar[TenantId | None] = ContextVar("sa_patterns_tenant", default=None)
_actor: ContextVar[str | None] = ContextVar("sa_patterns_actor", default=None)
_request: ContextVar[Mapping[str, str] | None] = ContextVar("sa_patterns_request", default=None)
_all_tenants: ContextVar[bool] = ContextVar("sa_patterns_all_tenants", default=False)


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
    token = _tenant.set(_check_tenant(tenant_id, "tenant_scope()"))
    try:
        yield tenant_id
    finally:
        _tenant.reset(token)


@contextmanager
def actor_scope(actor_id: object, **metadata: object) -> Iterator[str | None]:
    """Record ``actor_id`` (and optional request metadata) as who makes the block's changes."""
    actor = _check_actor(actor_id, "actor_scope()")
    meta = {str(k): str(v) for k, v in metadata.items()} or None
    for key, value in (meta or {}).items():
        _check_text(key + value, "actor_scope()", "request metadata value")
    token_actor = _actor.set(actor)
    token_meta = _request.set(meta)
    try:
        yield actor
    finally:
        _request.reset(token_meta)
        _actor.reset(token_actor)


@contextmanager
def all_tenants() -> Iterator[None]:
    """Deliberately lift tenant filtering for the block (admin work, migrations, reports)."""
    token = _all_tenants.set(True)
    try:
        yield
    finally:
        _all_tenants.reset(token)


def _info(session: Session | None) -> Mapping[str, Any]:
    return session.info if session is not None else {}


def current_tenant(session: Session | None = None) -> TenantId | None:
    """The tenant in force: ``session.info["tenant_id"]`` if set, else the scope's."""
    info = _info(session)
    if info.get("tenant_id") is not None:
        return _check_tenant(info["tenant_id"], 'session.info["tenant_id"]')
    return _tenant.get()


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
    return _all_tenants.get()


def current_actor(session: Session | None = None) -> str | None:
    """The actor in force: ``session.info["actor_id"]`` if set, else the scope's."""
    info = _info(session)
    if info.get("actor_id") is not None:
        return _check_actor(info["actor_id"], 'session.info["actor_id"]')
    return _actor.get()


def current_request_metadata(session: Session | None = None) -> Mapping[str, str] | None:
    """Request metadata from :func:`actor_scope` keywords or ``session.info["request"]``."""
    info = _info(session)
    if info.get("request") is not None:
        return {str(k): str(v) for k, v in dict(info["request"]).items()}
    return _request.get()


def transaction_settings(session: Session) -> dict[str, str]:
    """The ``set_config`` values this module contributes for a new transaction."""
    settings: dict[str, str] = {}
    tenant = current_tenant(session)
    if tenant is not None:
        settings[TENANT_SETTING] = str(tenant)
    actor = current_actor(session)
    if actor is not None:
        settings[ACTOR_SETTING] = actor
    meta = current_request_metadata(session)
    if meta:
        settings[REQUEST_SETTING] = json.dumps(dict(meta), sort_keys=True)
    return settings


#: Composed by :func:`sa_patterns.install` into the one ``set_config`` per transaction.
TRANSACTION_SETTINGS = transaction_settings
