"""Web framework integrations: the tenant and actor of each request, scoped for that request.

One module per framework, each an optional extra that imports its framework only when used:
:mod:`.asgi` (``TenantMiddleware``, any ASGI app; Starlette optional), :mod:`.fastapi`
(``tenant_dependency``), :mod:`.litestar` (``TenantPlugin``), :mod:`.flask` (``SAPatterns``).
This package imports none of them.
"""
