"""Who may do what: the roles of :mod:`sa_patterns.roles` made to exist, and the grants the
models imply, as objects autogenerate writes and compares with the live ACLs.

Role names are stored as placeholders (``"@app"``) and resolved when the SQL runs, so one
migration serves every deployment. None of these carry a comment: their state is the catalog's
(``pg_roles``, ``relacl``, ``nspacl``, ``pg_default_acl``), read by :meth:`read_live`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from sqlalchemy import MetaData, Table, bindparam, text

from ..roles import ADMIN, APP, OWNER, resolve_role
from .objects import Entity, qualified, quote, quote_literal

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = [
    "TABLE_PRIVILEGES",
    "Grant",
    "RoleSetup",
    "SchemaAccess",
    "access_entities",
    "manage_access",
    "set_privileges",
]

#: What the app and admin roles get on an ordinary table.
TABLE_PRIVILEGES = ("DELETE", "INSERT", "SELECT", "UPDATE")

_ROLES_EXIST = text("SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname IN :names").bindparams(
    bindparam("names", expanding=True)
)


@dataclass(frozen=True)
class RoleSetup(Entity):
    """The owner, app and admin roles exist (created ``NOLOGIN`` when missing; an operator gives
    the logins a password). Never dropped: roles are cluster-wide and may serve other databases."""

    roles: tuple[str, ...] = (OWNER, APP, ADMIN)

    kind: ClassVar[str] = "roles"
    order: ClassVar[int] = -100
    commented: ClassVar[bool] = False
    kept_when_undeclared: ClassVar[bool] = True

    def key(self) -> tuple[str, ...]:
        return (self.kind,)

    def describe(self) -> str:
        return "roles " + ", ".join(resolve_role(r) for r in self.roles)

    def create_sql(self) -> list[str]:
        statements = []
        for role in self.roles:
            name = resolve_role(role)
            # Concurrent runs may race to create it: the loser's error is swallowed. Without
            # CREATEROLE the error says which statement a superuser must run.
            statements.append(
                "DO $sa_patterns$ BEGIN\n"
                f"  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {quote_literal(name)}) THEN\n"
                f"    CREATE ROLE {quote(name)} NOLOGIN NOSUPERUSER NOBYPASSRLS;\n"
                "  END IF;\n"
                "EXCEPTION\n"
                "  WHEN duplicate_object OR unique_violation THEN NULL;\n"
                "  WHEN insufficient_privilege THEN RAISE EXCEPTION USING\n"
                f"    MESSAGE = {quote_literal(f'role {name} does not exist and this role may not create it')},\n"
                f"    HINT = {quote_literal(f'run as a superuser: CREATE ROLE {quote(name)} NOLOGIN NOSUPERUSER NOBYPASSRLS (or sa-patterns roles)')};\n"
                "END $sa_patterns$"
            )
        return statements

    def drop_sql(self) -> list[str]:
        return []

    def replace_sql(self, old: Entity) -> list[str]:
        return self.create_sql()

    @classmethod
    def read_live(
        cls, connection: Connection, tables: Mapping[str | None, list[str]]
    ) -> list[Entity]:
        wanted = cls()
        names = [resolve_role(r) for r in wanted.roles]
        present = connection.execute(_ROLES_EXIST, {"names": names}).scalar_one()
        return [wanted] if present == len(set(names)) else []


_SCHEMA_STATE = text(
    """
    SELECT n.nspname,
      coalesce((SELECT bool_and(pg_catalog.has_schema_privilege(r.oid, n.oid, 'USAGE'))
                FROM pg_catalog.pg_roles r WHERE r.rolname IN :names), false) AS usage,
      (SELECT count(DISTINCT d.defaclobjtype) FROM pg_catalog.pg_default_acl d
         CROSS JOIN LATERAL aclexplode(d.defaclacl) a
         JOIN pg_catalog.pg_roles r ON r.oid = a.grantee AND r.rolname = :app
        WHERE d.defaclnamespace = n.oid AND d.defaclobjtype IN ('r', 'S')) AS defaults
    FROM pg_catalog.pg_namespace n WHERE n.nspname = coalesce(:schema, current_schema())
    """
).bindparams(bindparam("names", expanding=True))


@dataclass(frozen=True)
class SchemaAccess(Entity):
    """``USAGE`` on the schema for the app and admin roles, and default privileges so tables and
    sequences the owner adds later are usable by them without another grant."""

    schema: str | None
    roles: tuple[str, ...] = (APP, ADMIN)

    kind: ClassVar[str] = "schema_access"
    order: ClassVar[int] = -90
    commented: ClassVar[bool] = False
    kept_when_undeclared: ClassVar[bool] = True

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "")

    def describe(self) -> str:
        return f"access to schema {self.schema or '(current)'} for " + ", ".join(
            resolve_role(r) for r in self.roles
        )

    def _each(self, template: str) -> list[str]:
        # {schema} and {role} are quoted when it runs (the current schema is only known then);
        # built with || rather than format(): no "%" for DDL() or a driver to mistake
        schema = quote_literal(self.schema) if self.schema else "current_schema()"
        statements = []
        for role in self.roles:
            command = quote_literal(template).replace(
                "{schema}", f"' || quote_ident({schema}) || '"
            ).replace("{role}", f"' || quote_ident({quote_literal(resolve_role(role))}) || '")
            statements.append(f"DO $sa_patterns$ BEGIN EXECUTE {command}; END $sa_patterns$")
        return statements

    def create_sql(self) -> list[str]:
        return (
            self._each("GRANT USAGE ON SCHEMA {schema} TO {role}")
            + self._each(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
                "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
            )
            + self._each("ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}")
        )

    def drop_sql(self) -> list[str]:
        return (
            self._each("ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON SEQUENCES FROM {role}")
            + self._each("ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON TABLES FROM {role}")
            + self._each("REVOKE USAGE ON SCHEMA {schema} FROM {role}")
        )

    def replace_sql(self, old: Entity) -> list[str]:
        return self.create_sql()

    @classmethod
    def read_live(
        cls, connection: Connection, tables: Mapping[str | None, list[str]]
    ) -> list[Entity]:
        found: list[Entity] = []
        roles = (APP, ADMIN)
        names = [resolve_role(r) for r in roles]
        for schema in tables:
            row = connection.execute(
                _SCHEMA_STATE, {"names": names, "app": names[0], "schema": schema}
            ).first()
            if row is not None and row.usage and row.defaults == 2:
                found.append(cls(schema=schema, roles=roles))
        return found


_TABLE_ACL = text(
    """
    SELECT c.relname, r.rolname,
      ARRAY(SELECT DISTINCT a.privilege_type FROM aclexplode(c.relacl) a
            WHERE a.grantee = r.oid ORDER BY 1) AS privileges,
      coalesce((SELECT bool_and(pg_catalog.has_sequence_privilege(r.oid, d.objid, 'USAGE'))
                FROM pg_catalog.pg_depend d
                JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                WHERE d.refobjid = c.oid AND d.classid = 'pg_catalog.pg_class'::regclass
                  AND d.deptype IN ('a', 'i')), true) AS sequences
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN pg_catalog.pg_roles r
    WHERE c.relname IN :tables AND n.nspname = coalesce(:schema, current_schema())
      AND c.relkind IN ('r', 'p', 'v', 'm') AND r.rolname IN :roles
    """
).bindparams(bindparam("tables", expanding=True), bindparam("roles", expanding=True))

_GRANT_SEQUENCES = """DO $sa_patterns$
DECLARE sa_seq regclass;
BEGIN
  FOR sa_seq IN SELECT d.objid::regclass FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
      WHERE d.refobjid = {table}::regclass AND d.classid = 'pg_catalog.pg_class'::regclass
        AND d.deptype IN ('a', 'i')
  LOOP
    EXECUTE 'GRANT USAGE, SELECT ON SEQUENCE ' || sa_seq || ' TO ' || quote_ident({role});
  END LOOP;
END $sa_patterns$"""


@dataclass(frozen=True)
class Grant(Entity):
    """Exactly ``privileges`` on a table for a role (anything else it held is revoked), and with
    ``sequences`` ``USAGE, SELECT`` on the table's own sequences (serial and identity columns),
    without which every INSERT as that role fails."""

    schema: str | None
    table: str
    role: str = APP
    privileges: tuple[str, ...] = TABLE_PRIVILEGES
    sequences: bool = True

    kind: ClassVar[str] = "grant"
    order: ClassVar[int] = 60
    commented: ClassVar[bool] = False
    #: grants someone else made (models that stopped managing roles) are never revoked
    kept_when_undeclared: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "privileges", tuple(sorted({p.upper() for p in self.privileges})))

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "", self.table, self.role)

    def describe(self) -> str:
        privileges = ", ".join(self.privileges) or "nothing"
        return f"grant of {privileges} on {qualified(self.schema, self.table)} to {resolve_role(self.role)}"

    def create_sql(self) -> list[str]:
        table, role = qualified(self.schema, self.table), quote(resolve_role(self.role))
        statements = [f"REVOKE ALL ON {table} FROM {role}"]
        if self.privileges:
            statements.append(f"GRANT {', '.join(self.privileges)} ON {table} TO {role}")
        if self.sequences:
            statements.append(
                _GRANT_SEQUENCES.format(table=quote_literal(table), role=quote_literal(resolve_role(self.role)))
            )
        return statements

    def drop_sql(self) -> list[str]:
        table, role = qualified(self.schema, self.table), quote(resolve_role(self.role))
        return [
            "DO $sa_patterns$ BEGIN "
            f"IF to_regclass({quote_literal(table)}) IS NOT NULL THEN "
            f"REVOKE ALL ON {table} FROM {role}; END IF; END $sa_patterns$"
        ]

    def replace_sql(self, old: Entity) -> list[str]:
        return self.create_sql()

    @classmethod
    def read_live(
        cls, connection: Connection, tables: Mapping[str | None, list[str]]
    ) -> list[Entity]:
        by_name = {resolve_role(r): r for r in (APP, ADMIN)}
        found: list[Entity] = []
        for schema, names in tables.items():
            rows = connection.execute(
                _TABLE_ACL, {"tables": names, "schema": schema, "roles": list(by_name)}
            )
            for table, role, privileges, sequences in rows:
                found.append(
                    cls(schema, table, by_name[role], tuple(privileges or ()), sequences=bool(sequences))
                )
        return found


#: ``{table.key: privileges}`` for tables whose app/admin grants differ from
#: :data:`TABLE_PRIVILEGES` (the audit log: ``SELECT, INSERT`` only).
_PRIVILEGES_KEY = "sa_patterns.table_privileges"


def set_privileges(table: Table, privileges: Iterable[str]) -> None:
    """Grant the app and admin roles exactly ``privileges`` on ``table`` (instead of DML)."""
    table.metadata.info.setdefault(_PRIVILEGES_KEY, {})[table.key] = tuple(privileges)


def access_entities(metadata: MetaData) -> list[Entity]:
    """The roles, schema access and per-table grants the models of ``metadata`` need."""
    from .registry import is_real_table

    tables = [t for t in metadata.sorted_tables if is_real_table(t)]
    special: dict[str, tuple[str, ...]] = metadata.info.get(_PRIVILEGES_KEY, {})
    entities: list[Entity] = [RoleSetup()]
    entities += [SchemaAccess(schema) for schema in dict.fromkeys(t.schema for t in tables)]
    for table in tables:
        privileges = special.get(table.key, TABLE_PRIVILEGES)
        entities += [Grant(table.schema, table.name, role, privileges) for role in (APP, ADMIN)]
    return entities


def manage_access(metadata: MetaData) -> None:
    """Generate the role model's objects for ``metadata`` (tenant tables with RLS turn it on;
    call it for models without them)."""
    from .registry import provide

    provide(metadata, "access", access_entities)
