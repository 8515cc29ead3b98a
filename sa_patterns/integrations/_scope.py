"""One request's scope, shared by every framework integration: resolve the tenant and actor
with the application's own resolvers, name the request, and hold
:func:`~sa_patterns.tenant_scope` / :func:`~sa_patterns.actor_scope` for exactly the request.

Each integration enters :func:`request_scope` where its framework guarantees the exit runs in
the same context as the entry (after the response, the stream and the background tasks; on
errors too), so a reused worker thread or task never carries one request's tenant into the
next. A scope already in force when a request begins is such a leak, and is refused.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeAlias, TypeVar

from ..context import (
    TenantId,
    actor_scope,
    current_actor,
    current_request_metadata,
    current_tenant,
    is_all_tenants,
    tenant_scope,
)
from ..errors import ConfigurationError

__all__ = [
    "MISSING_TENANT",
    "ActorId",
    "ActorResult",
    "TenantResult",
    "check_not_scoped",
    "make_request_id",
    "request_scope",
    "resolve",
    "resolve_sync",
]

_C = TypeVar("_C")

ActorId: TypeAlias = "int | str | uuid.UUID"
#: What a tenant resolver returns: the id, None (the request names no tenant), or an awaitable.
TenantResult: TypeAlias = "TenantId | Awaitable[TenantId | None] | None"
#: What an actor resolver returns: the id, None (nobody), or an awaitable of either.
ActorResult: TypeAlias = "ActorId | Awaitable[ActorId | None] | None"

#: What a request without a tenant is answered (403, before any endpoint code runs).
MISSING_TENANT = "no tenant could be resolved for this request"

# A client-sent request id is a correlation id, kept only when it looks like one; anything
# else (too long, spaces, quotes, control characters) is replaced by a generated id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


async def resolve(resolver: Callable[[_C], Any], connection: _C) -> Any:
    """``resolver(connection)``, awaited if it returned an awaitable (sync or async resolvers)."""
    value = resolver(connection)
    if inspect.isawaitable(value):
        value = await value
    return value


def resolve_sync(resolver: Callable[[_C], Any], connection: _C, where: str) -> Any:
    """``resolver(connection)`` for a synchronous framework: an awaitable is a mistake."""
    value = resolver(connection)
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # no "never awaited" warning on top of the error
        raise ConfigurationError(
            f"{where}: the resolver returned an awaitable, but this framework calls it "
            "synchronously. Use a plain function (def, not async def)."
        )
    return value


def make_request_id(sent: str | None) -> str:
    """The request's id: the client's (header) when it is a plausible id, else a new one."""
    if sent is not None and _REQUEST_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def check_not_scoped(where: str) -> None:
    """Refuse to start a request under a scope already in force: it leaked from earlier work
    on this thread or task (a scope entered without its ``with``, one set at import or in a
    lifespan handler, a second integration on the same app) and would otherwise reach SQL."""
    if (
        current_tenant() is not None
        or is_all_tenants()
        or current_actor() is not None
        or current_request_metadata() is not None
    ):
        raise ConfigurationError(
            f"{where}: a tenant, actor or all_tenants() scope is already in force when the "
            f"request begins (tenant {current_tenant()!r}, actor {current_actor()!r}). It leaked "
            "from earlier work on this worker: enter scopes only with `with`, set none at import "
            "or in startup code, and install one integration per app."
        )


@contextmanager
def request_scope(
    tenant: TenantId | None,
    actor: ActorId | None,
    *,
    request_id: str,
    method: str,
    path: str,
) -> Iterator[None]:
    """The request's tenant (when there is one) and actor, with ``request_id``, ``method`` and
    ``path`` as request metadata: the audit log's ``request`` column."""
    with ExitStack() as stack:
        if tenant is not None:
            stack.enter_context(tenant_scope(tenant))
        stack.enter_context(actor_scope(actor, request_id=request_id, method=method, path=path))
        yield
