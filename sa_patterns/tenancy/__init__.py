"""Tenant scoping that fails closed, with PostgreSQL row-level security as the second wall.

Two independent walls keep tenants apart:

1. **The ORM wall.** Every ORM statement on a :class:`TenantMixin` model (top-level selects,
   joins, relationship loads, refreshes, ``session.get()``, ORM bulk UPDATE/DELETE) gets
   ``tenant_id = :tenant`` through :func:`sqlalchemy.orm.with_loader_criteria`; the tenant is a
   bound parameter taken from the scope *when the statement runs*. Flushes fill ``tenant_id`` and
   refuse to write another tenant's rows. No tenant in scope means :class:`TenantRequired`.
2. **The database wall.** ``__rls__ = True`` adds ``ENABLE``/``FORCE ROW LEVEL SECURITY`` and a
   policy comparing ``tenant_id`` with the transaction-local setting ``app.tenant_id`` (sent once
   per transaction by :mod:`sa_patterns.context`), so raw SQL is filtered as well.

Objects live in the identity map under an identity token naming the tenant they were loaded for,
so ``session.get()`` and many-to-one lazy loads never hand back a row cached under another tenant:
they go to the database, where both walls apply.
"""

from __future__ import annotations

from ..context import ALL_TENANTS_SETTING
from .criteria import table_criteria
from .guards import PATTERN
from .mixin import TenantMixin, scope_copies, tenant_foreign_key, tenant_unique
from .rls import rls_entities
from .tables import citus_mode, is_tenant_table, set_citus_mode, tenant_tables

__all__ = [
    "ALL_TENANTS_SETTING",
    "PATTERN",
    "TenantMixin",
    "citus_mode",
    "is_tenant_table",
    "rls_entities",
    "scope_copies",
    "set_citus_mode",
    "table_criteria",
    "tenant_foreign_key",
    "tenant_tables",
    "tenant_unique",
]
