"""Is row-level security really the second wall? A check for tests, CI and ``sa-patterns doctor``.

A policy alone proves little: superusers and ``BYPASSRLS`` roles skip every policy, a table's
owner skips them unless RLS is ``FORCE``d (and can switch RLS off), and a role that can
``SET ROLE`` to any of those inherits the escape. :func:`rls_problems` looks for each of these
for every ``TenantMixin`` table, as seen by the role the application connects with.
"""

from __future__ import annotations

from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from ..schema.objects import qualified
from ..tenancy import tenant_tables

__all__ = ["assert_rls_ready", "drop_tenant_references", "rls_problems"]

_ROLE = text(
    "SELECT rolname, rolsuper, rolbypassrls FROM pg_catalog.pg_roles "
    "WHERE rolname = coalesce(:role, current_user)"
)
# Roles the app role can become (SET ROLE) that skip RLS: superusers and BYPASSRLS roles.
_ESCAPES = text(
    "SELECT r.rolname FROM pg_catalog.pg_roles r "
    "WHERE (r.rolsuper OR r.rolbypassrls) AND r.rolname <> :role "
    "AND pg_catalog.pg_has_role(:role, r.oid, 'MEMBER')"
)
_TABLE = text(
    "SELECT c.relrowsecurity, c.relforcerowsecurity, "
    "pg_catalog.pg_has_role(:role, c.relowner, 'MEMBER') AS owns, "
    "(SELECT count(*) FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid "
    "   AND (0 = ANY (p.polroles) OR EXISTS (SELECT FROM unnest(p.polroles) AS r(oid) "
    "        WHERE pg_catalog.pg_has_role(:role, r.oid, 'MEMBER')))) AS policies, "
    "ARRAY(SELECT a.rolname FROM pg_catalog.pg_policy p "
    "      CROSS JOIN LATERAL unnest(p.polroles) AS pr(oid) "
    "      JOIN pg_catalog.pg_roles a ON a.oid = pr.oid "
    "      WHERE p.polrelid = c.oid AND pg_catalog.pg_has_role(:role, pr.oid, 'MEMBER')) AS via "
    "FROM pg_catalog.pg_class c WHERE c.oid = to_regclass(:table)"
)


def rls_problems(
    connection: Connection, metadata: MetaData, *, role: str | None = None
) -> list[str]:
    """Every reason RLS would not stop ``role`` (default: the connection's user) from reading
    another tenant's rows in ``metadata``'s tenant tables; empty when the wall holds."""
    found = connection.execute(_ROLE, {"role": role}).first()
    if found is None:
        return [f"role {role!r} does not exist"]
    name, superuser, bypass = found
    problems: list[str] = []
    if superuser:
        problems.append(f"role {name} is a superuser: RLS never applies to it. Connect the app "
                        "as a NOSUPERUSER NOBYPASSRLS role that does not own the tables.")
    if bypass:
        problems.append(f"role {name} has BYPASSRLS: ALTER ROLE {name} NOBYPASSRLS.")
    for (escape,) in connection.execute(_ESCAPES, {"role": name}):
        problems.append(f"role {name} is a member of {escape}, which bypasses RLS: revoke it.")
    for table in tenant_tables(metadata):
        where = qualified(table.schema, table.name)
        row = connection.execute(_TABLE, {"role": name, "table": where}).first()
        if row is None:
            problems.append(f"table {where} does not exist (run the migrations).")
            continue
        enabled, forced, owns, policies, via = row
        if not enabled:
            problems.append(f"table {where}: row level security is not enabled (__rls__ = True).")
        elif not forced:
            problems.append(f"table {where}: row level security is not FORCEd.")
        if not policies:
            problems.append(f"table {where} has no policy that applies to {name}: with RLS "
                            "enabled it sees nothing, without it everything (migrate: "
                            "autogenerate writes the tenant policy).")
        if owns:
            problems.append(f"table {where} is owned by {name} (or a role it belongs to): the "
                            "owner can turn RLS off. Migrate as a separate owner role.")
        for admin in via:
            problems.append(f"table {where}: {name} belongs to {admin}, which a policy lets see "
                            "all tenants: the app role must not hold the admin role.")
    return problems


def assert_rls_ready(
    connection: Connection, metadata: MetaData, *, role: str | None = None
) -> None:
    """Fail (``AssertionError``) with every problem :func:`rls_problems` finds."""
    problems = rls_problems(connection, metadata, role=role)
    if problems:
        raise AssertionError("row level security is not ready:\n- " + "\n- ".join(problems))


def drop_tenant_references(connection: Connection, metadata: MetaData) -> None:
    """Remove the composite ``(tenant_id, id)`` foreign keys of ``metadata``'s tables, for tests
    that seed what they would refuse (a child of tenant 2 under a parent of tenant 1) to try
    the ORM wall alone. Never for a real database."""
    from ..schema import TenantReference, registered

    for entity in registered(metadata):
        if isinstance(entity, TenantReference):
            for statement in entity.drop_sql():
                connection.exec_driver_sql(statement)
