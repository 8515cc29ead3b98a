"""``SAPatterns``: every Flask request runs in its tenant's scope, reset in its teardown.

Flask serves a request in one thread, from ``before_request`` to ``teardown_request``, and WSGI
servers reuse those threads: the scope entered before the request is reset in its teardown (on
errors too), and a request that begins under a scope already in force (a teardown that never
ran) is refused rather than served as another tenant. A streamed body is iterated after the
teardown (Flask 3 tears the request down when the view returns, even with
``stream_with_context``), so it runs unscoped, and fails closed, unless wrapped in
:func:`stream_with_scope`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from contextvars import copy_context
from typing import Any, TypeVar

from ..context import TenantId
from ._scope import (
    MISSING_TENANT,
    ActorId,
    check_not_scoped,
    make_request_id,
    request_scope,
    resolve_sync,
)

try:
    from flask import Flask, Request, Response, abort, g, request
except ImportError as exc:  # pragma: no cover - the extra is installed wherever this is tested
    raise ImportError(
        "sa_patterns.integrations.flask needs Flask: pip install 'sa_patterns[flask]'"
    ) from exc

__all__ = ["SAPatterns", "stream_with_scope"]

_T = TypeVar("_T")

_SCOPE = "_sa_patterns_scope"
_REQUEST_ID = "sa_patterns_request_id"


class SAPatterns:
    """``SAPatterns(app, tenant=..., actor=...)``, or ``ext = SAPatterns(tenant=...)`` then
    ``ext.init_app(app)`` in an app factory.

    ``tenant(request)`` / ``actor(request)`` receive ``flask.request`` and return the id or
    ``None``; they are plain functions (Flask calls them synchronously). A request without a
    tenant (``required=True``) is aborted with **403** before the view, through the app's
    error handlers. The request id (the ``request_id_header`` when plausible, else a new one) is
    ``g.sa_patterns_request_id``, echoed in the response, and recorded with the method and path
    as request metadata (the audit log's ``request`` column).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        tenant: Callable[[Request], TenantId | None],
        actor: Callable[[Request], ActorId | None] | None = None,
        request_id_header: str = "X-Request-Id",
        required: bool = True,
    ) -> None:
        self.tenant = tenant
        self.actor = actor
        self.request_id_header = request_id_header
        self.required = required
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        app.extensions["sa_patterns"] = self
        app.before_request(self._begin)
        app.after_request(self._echo_request_id)
        app.teardown_request(self._end)

    def _begin(self) -> None:
        check_not_scoped("SAPatterns")
        request_id = make_request_id(request.headers.get(self.request_id_header))
        setattr(g, _REQUEST_ID, request_id)
        tenant = resolve_sync(self.tenant, request, "SAPatterns(tenant=...)")
        if tenant is None and self.required:
            abort(403, description=MISSING_TENANT)
        actor = resolve_sync(self.actor, request, "SAPatterns(actor=...)") if self.actor else None
        stack = ExitStack()
        stack.enter_context(
            request_scope(tenant, actor, request_id=request_id, method=request.method, path=request.path)
        )
        setattr(g, _SCOPE, stack)

    def _echo_request_id(self, response: Response) -> Response:
        request_id = g.get(_REQUEST_ID)
        if request_id is not None:
            response.headers[self.request_id_header] = request_id
        return response

    def _end(self, exc: BaseException | None) -> None:
        stack: Any = g.pop(_SCOPE, None)
        if stack is not None:
            stack.close()


def stream_with_scope(body: Iterable[_T]) -> Iterator[_T]:
    """``Response(stream_with_scope(rows()))``: iterate a streamed body in the scope of the
    request that returned it. Call it in the view: each step runs in a copy of the view's
    context, so the scope is in force while the body runs and never leaks into the server's
    thread between steps or after a client disconnects. Wrap ``stream_with_context(...)`` in it
    when the body also reads ``flask.request``."""
    context = copy_context()
    iterator = iter(body)

    def steps() -> Iterator[_T]:
        try:
            while True:
                try:
                    item = context.run(next, iterator)
                except StopIteration:
                    return
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                context.run(close)

    return steps()
