"""Database objects SQLAlchemy has no model for: extensions, functions, triggers, policies,
row-level security, views and materialized views.

Patterns *produce* these (a mixin adds its trigger to ``MetaData.info``); integrations
(``create_all``, the Alembic comparators) *consume* them and know nothing about patterns.

Each object is a frozen dataclass of plain values, so its ``repr`` is a constructor call that
autogenerate writes into migrations verbatim: a migration freezes the SQL it was generated with
and never changes meaning when the library changes.

Change detection needs no text normalisation: every object we create is stamped with
``COMMENT ON ... IS 'sa_patterns:<json spec>'``. The catalog reader rebuilds the object from that
comment, so comparing is comparing specs, and a drop can be reversed exactly. A function's body
is compared without its layout (:func:`~.sql_text.layout_free`), since bodies are laid out for
reading and PostgreSQL keeps the text it was given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy.dialects import postgresql

from ..roles import resolve_role
from .sql_text import layout_free

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = [
    "COMMENT_PREFIX",
    "Entity",
    "Extension",
    "Function",
    "MaterializedView",
    "Policy",
    "RowLevelSecurity",
    "Trigger",
    "View",
    "entity_from_spec",
    "ident",
    "ident_prefix",
    "qualified",
    "quote",
    "quote_literal",
]

COMMENT_PREFIX = "sa_patterns:"

_preparer = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]


#: PostgreSQL's identifier limit in bytes; longer names are cut silently, so two long names
#: can collide. ``ident()`` keeps derived names under it, distinct and stable.
MAX_IDENT = 63


def ident(base: str, suffix: str) -> str:
    """``base_suffix``, within PostgreSQL's 63-byte identifier limit: when too long, ``base``
    is cut and a hash of the whole name keeps it distinct (the same input, the same name)."""
    name = f"{base}_{suffix}"
    if len(name.encode()) <= MAX_IDENT:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    room = MAX_IDENT - len(suffix.encode()) - 11
    if room < 1:  # the suffix alone is too long: cut it too
        return f"{_cut(base, 16)}_{digest}_{_cut(suffix, MAX_IDENT - 27)}"
    return f"{_cut(base, room)}_{digest}_{suffix}"


def ident_prefix(base: str, reserve: int) -> str:
    """``base``, or when it would leave fewer than ``reserve`` bytes of the limit for what is
    appended at run time (a partition's period, say), a cut of it with a hash: names built on
    it stay distinct instead of being cut to one."""
    if len(base.encode()) + reserve <= MAX_IDENT:
        return base
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{_cut(base, MAX_IDENT - reserve - 9)}_{digest}"


def _cut(text: str, size: int) -> str:
    """The longest prefix of ``text`` within ``size`` bytes (never half a character)."""
    return text.encode()[:size].decode(errors="ignore")


def quote(name: str) -> str:
    """Quote an identifier the way PostgreSQL's dialect does (only when needed)."""
    return _preparer.quote(name)


def qualified(schema: str | None, name: str) -> str:
    """``schema.name`` with each part quoted; no schema means the search path decides."""
    return f"{quote(schema)}.{quote(name)}" if schema else quote(name)


def quote_literal(value: str) -> str:
    """A SQL string literal for DDL (DDL takes no bound parameters)."""
    return "'" + value.replace("'", "''") + "'"


_KINDS: dict[str, type[Entity]] = {}


@dataclass(frozen=True)
class Entity:
    """A database object we create, compare and drop."""

    kind: ClassVar[str] = ""
    #: creation order across kinds; drops run in the reverse order
    order: ClassVar[int] = 0
    #: objects stamped with a spec comment (extensions not owned by us and RLS state are not)
    commented: ClassVar[bool] = True
    #: found in the database but not declared: left alone instead of dropped
    kept_when_undeclared: ClassVar[bool] = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            _KINDS[cls.kind] = cls

    # identity -----------------------------------------------------------------------------
    def key(self) -> tuple[str, ...]:
        """What makes two objects "the same object" (not the same definition)."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind} {'.'.join(p for p in self.key()[1:] if p)}"

    # definition ---------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["kind"] = self.kind
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.spec(), sort_keys=True).encode()).hexdigest()[:16]

    def comment_target(self) -> str:
        """What follows ``COMMENT ON`` for this object."""
        raise NotImplementedError

    def comment_sql(self) -> str:
        text = COMMENT_PREFIX + json.dumps(self.spec(), sort_keys=True, separators=(",", ":"))
        return f"COMMENT ON {self.comment_target()} IS {quote_literal(text)}"

    def create_sql(self) -> list[str]:
        raise NotImplementedError

    def drop_sql(self) -> list[str]:
        raise NotImplementedError

    def replace_sql(self, old: Entity) -> list[str]:
        """Statements turning ``old`` (same key) into ``self``; drop + create unless cheaper."""
        return old.drop_sql() + self.create_sql()

    def same_definition(self, other: Entity) -> bool:
        return self.spec() == other.spec()

    def same_in_database(self, old: Entity, connection: Connection) -> bool:
        """Whether ``old`` (as the catalog holds it) already is this definition; kinds whose
        text PostgreSQL rewrites (views) compare through the server's canonical form."""
        return self.same_definition(old)

    def create_statements(self) -> list[str]:
        return self.create_sql() + ([self.comment_sql()] if self.commented else [])

    @classmethod
    def read_live(
        cls, connection: Connection, tables: Mapping[str | None, list[str]]
    ) -> list[Entity]:
        """Objects of this kind read from the catalog itself, for kinds that carry no comment
        (``tables``: the models' table names per schema, ``None`` the current schema)."""
        return []

    def replace_statements(self, old: Entity) -> list[str]:
        return self.replace_sql(old) + ([self.comment_sql()] if self.commented else [])


#: The pattern modules that define kinds of their own, imported when a comment names one.
_KIND_MODULES = (
    "sa_patterns.schema.access",
    "sa_patterns.schema.constraints",
    "sa_patterns.partitioning",
    "sa_patterns.views",
    "sa_patterns.eventsourcing.tables",
    "sa_patterns.tenancy.admin_keys",
)


def live_kinds() -> list[type[Entity]]:
    """Every kind of object, for :meth:`Entity.read_live`."""
    return list(_KINDS.values())


def entity_from_spec(spec: Mapping[str, Any]) -> Entity:
    """Rebuild an object from the JSON stored in its ``sa_patterns:`` comment."""
    data = dict(spec)
    kind = data.pop("kind")
    if kind not in _KINDS:  # defined by a pattern module the models at hand did not import
        import importlib

        for module in _KIND_MODULES:
            importlib.import_module(module)
    if kind not in _KINDS:
        raise ValueError(f"unknown sa_patterns object kind {kind!r} (a newer toolkit made it?)")
    cls = _KINDS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {
        k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields
    }
    return cls(**kwargs)


@dataclass(frozen=True)
class Extension(Entity):
    """``CREATE EXTENSION IF NOT EXISTS``; one that pre-existed (no stamp) is never dropped."""

    name: str
    schema: str | None = None

    kind: ClassVar[str] = "extension"
    order: ClassVar[int] = 0

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.name)

    def comment_target(self) -> str:
        return f"EXTENSION {quote(self.name)}"

    def create_sql(self) -> list[str]:
        schema = f" SCHEMA {quote(self.schema)}" if self.schema else ""
        return [f"CREATE EXTENSION IF NOT EXISTS {quote(self.name)}{schema}"]

    def drop_sql(self) -> list[str]:
        return [f"DROP EXTENSION IF EXISTS {quote(self.name)}"]

    def replace_sql(self, old: Entity) -> list[str]:
        return []  # nothing to change in place; the comment is refreshed


@dataclass(frozen=True)
class Function(Entity):
    """A (usually plpgsql) function; replaced in place with ``CREATE OR REPLACE``.

    ``arguments`` is the argument list as written (``"a integer, b text"``) and ``identity``
    the argument *types* only, used by ``DROP``/``COMMENT`` (``"integer, text"``).
    """

    schema: str | None
    name: str
    returns: str
    body: str
    arguments: str = ""
    identity: str = ""
    language: str = "plpgsql"
    #: extra clauses such as ``SECURITY DEFINER`` or ``SET plan_cache_mode = force_custom_plan``
    options: str = ""

    kind: ClassVar[str] = "function"
    order: ClassVar[int] = 10

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "", self.name, self.identity)

    def signature(self) -> str:
        return f"{qualified(self.schema, self.name)}({self.identity})"

    def comment_target(self) -> str:
        return f"FUNCTION {self.signature()}"

    def _definition(self, verb: str) -> str:
        options = f"\n{self.options}" if self.options else ""
        return (
            f"{verb} FUNCTION {qualified(self.schema, self.name)}({self.arguments})\n"
            f"RETURNS {self.returns} LANGUAGE {self.language}{options}\n"
            f"AS $sa_patterns$\n{self.body}\n$sa_patterns$"
        )

    def create_sql(self) -> list[str]:
        return [self._definition("CREATE OR REPLACE")]

    def drop_sql(self) -> list[str]:
        return [f"DROP FUNCTION IF EXISTS {self.signature()}"]

    def same_definition(self, other: Entity) -> bool:
        """Bodies are compared without their layout: PostgreSQL keeps a body verbatim, and one
        laid out otherwise (a database migrated before :func:`~.sql_text.wrap`) is the same code."""
        if type(other) is not type(self):
            return False
        mine, theirs = self.spec(), other.spec()
        return layout_free(str(mine.pop("body"))) == layout_free(str(theirs.pop("body"))) and mine == theirs

    def replace_sql(self, old: Entity) -> list[str]:
        assert isinstance(old, Function)
        if old.returns.lower() == self.returns.lower():
            return self.create_sql()
        return old.drop_sql() + self.create_sql()


@dataclass(frozen=True)
class Trigger(Entity):
    """A trigger on a table, calling a function."""

    schema: str | None
    table: str
    name: str
    #: e.g. ``"AFTER INSERT"`` or ``"BEFORE UPDATE OF deleted_at"``
    when: str
    function: str
    for_each: str = "ROW"
    referencing: str = ""
    condition: str = ""

    kind: ClassVar[str] = "trigger"
    order: ClassVar[int] = 20

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "", self.table, self.name)

    def comment_target(self) -> str:
        return f"TRIGGER {quote(self.name)} ON {qualified(self.schema, self.table)}"

    def create_sql(self) -> list[str]:
        parts = [f"CREATE TRIGGER {quote(self.name)} {self.when} ON {qualified(self.schema, self.table)}"]
        if self.referencing:
            parts.append(f"REFERENCING {self.referencing}")
        parts.append(f"FOR EACH {self.for_each}")
        if self.condition:
            parts.append(f"WHEN ({self.condition})")
        parts.append(f"EXECUTE FUNCTION {self.function}")
        return ["\n".join(parts)]

    def drop_sql(self) -> list[str]:
        return [f"DROP TRIGGER IF EXISTS {quote(self.name)} ON {qualified(self.schema, self.table)}"]


@dataclass(frozen=True)
class RowLevelSecurity(Entity):
    """``ENABLE`` (and by default ``FORCE``) row-level security on a table."""

    schema: str | None
    table: str
    force: bool = True

    kind: ClassVar[str] = "rls"
    order: ClassVar[int] = 30
    commented: ClassVar[bool] = False  # the state itself is in pg_class

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "", self.table)

    def describe(self) -> str:
        return f"row level security on {qualified(self.schema, self.table)}"

    def create_sql(self) -> list[str]:
        table = qualified(self.schema, self.table)
        force = "FORCE" if self.force else "NO FORCE"
        return [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} {force} ROW LEVEL SECURITY",
        ]

    def drop_sql(self) -> list[str]:
        table = qualified(self.schema, self.table)
        return [
            f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY",
        ]

    def replace_sql(self, old: Entity) -> list[str]:
        return self.create_sql()

    @classmethod
    def read_live(
        cls, connection: Connection, tables: Mapping[str | None, list[str]]
    ) -> list[Entity]:
        from sqlalchemy import bindparam, text

        query = text(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity "
            "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname IN :names AND n.nspname = coalesce(:schema, current_schema()) "
            "AND c.relkind IN ('r', 'p')"
        ).bindparams(bindparam("names", expanding=True))
        found: list[Entity] = []
        for schema, names in tables.items():
            for name, enabled, forced in connection.execute(query, {"names": names, "schema": schema}):
                if enabled:
                    found.append(cls(schema=schema, table=name, force=bool(forced)))
        return found


@dataclass(frozen=True)
class Policy(Entity):
    """A row-level security policy."""

    schema: str | None
    table: str
    name: str
    using: str | None = None
    with_check: str | None = None
    command: str = "ALL"
    roles: tuple[str, ...] = ("PUBLIC",)
    permissive: bool = True

    kind: ClassVar[str] = "policy"
    order: ClassVar[int] = 40

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "", self.table, self.name)

    def comment_target(self) -> str:
        return f"POLICY {quote(self.name)} ON {qualified(self.schema, self.table)}"

    def create_sql(self) -> list[str]:
        roles = ", ".join(
            r if r.upper() in {"PUBLIC", "CURRENT_USER"} else quote(resolve_role(r)) for r in self.roles
        )
        sql = (
            f"CREATE POLICY {quote(self.name)} ON {qualified(self.schema, self.table)}\n"
            f"AS {'PERMISSIVE' if self.permissive else 'RESTRICTIVE'} FOR {self.command} TO {roles}"
        )
        if self.using is not None:
            sql += f"\nUSING ({self.using})"
        if self.with_check is not None:
            sql += f"\nWITH CHECK ({self.with_check})"
        return [sql]

    def drop_sql(self) -> list[str]:
        return [f"DROP POLICY IF EXISTS {quote(self.name)} ON {qualified(self.schema, self.table)}"]


@dataclass(frozen=True)
class View(Entity):
    """A view defined by SQL text (compiled from a ``select()`` by :mod:`sa_patterns.views`).

    Compared through PostgreSQL's canonical form (``pg_get_viewdef``), so SQL that prints
    differently but means the same is no diff. Replaced in place with ``CREATE OR REPLACE``;
    when the output columns change, autogenerate drops and recreates it and its dependents.
    """

    schema: str | None
    name: str
    definition: str
    security_invoker: bool = False

    kind: ClassVar[str] = "view"
    order: ClassVar[int] = 50

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "", self.name)

    def comment_target(self) -> str:
        return f"VIEW {qualified(self.schema, self.name)}"

    def _with(self) -> str:
        return " WITH (security_invoker = true)" if self.security_invoker else ""

    def create_sql(self) -> list[str]:
        return [f"CREATE VIEW {qualified(self.schema, self.name)}{self._with()} AS\n{self.definition}"]

    def drop_sql(self) -> list[str]:
        return [f"DROP VIEW IF EXISTS {qualified(self.schema, self.name)}"]

    def replace_sql(self, old: Entity) -> list[str]:
        # OR REPLACE also resets the view's options to exactly the WITH list given.
        view = qualified(self.schema, self.name)
        return [f"CREATE OR REPLACE VIEW {view}{self._with()} AS\n{self.definition}"]

    def same_in_database(self, old: Entity, connection: Connection) -> bool:
        if not isinstance(old, View) or old.security_invoker != self.security_invoker:
            return False
        return _same_query(connection, self, old)


_INDEX_NAME = re.compile(
    r'^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?'
    r'("(?:[^"]|"")+"|[^\s(]+)\s+ON\b',
    re.IGNORECASE,
)


@dataclass(frozen=True)
class MaterializedView(Entity):
    """A materialized view and the indexes declared on it (``CREATE INDEX`` statements).

    An index-only change creates/drops just those indexes; any other change rebuilds the view,
    always with its indexes (autogenerate also rebuilds the views that read it).
    """

    schema: str | None
    name: str
    definition: str
    indexes: tuple[str, ...] = ()
    with_data: bool = True

    kind: ClassVar[str] = "materialized_view"
    #: same rank as views: declaration order (a view over a matview) decides between them
    order: ClassVar[int] = 50

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "", self.name)

    def comment_target(self) -> str:
        return f"MATERIALIZED VIEW {qualified(self.schema, self.name)}"

    def create_sql(self) -> list[str]:
        data = "WITH DATA" if self.with_data else "WITH NO DATA"
        return [
            f"CREATE MATERIALIZED VIEW {qualified(self.schema, self.name)} AS\n{self.definition}\n{data}",
            *self.indexes,
        ]

    def drop_sql(self) -> list[str]:
        return [f"DROP MATERIALIZED VIEW IF EXISTS {qualified(self.schema, self.name)}"]

    def index_name(self, statement: str) -> str:
        """The (quoted) name a ``CREATE INDEX`` statement gives its index."""
        match = _INDEX_NAME.match(statement)
        if match is None:
            raise ValueError(f"not a CREATE INDEX statement with a name: {statement!r}")
        return match.group(1)

    def replace_sql(self, old: Entity) -> list[str]:
        if (
            isinstance(old, MaterializedView)
            and old.definition == self.definition
            and old.with_data == self.with_data
        ):
            prefix = f"{quote(self.schema)}." if self.schema else ""
            gone = [i for i in old.indexes if i not in self.indexes]
            new = [i for i in self.indexes if i not in old.indexes]
            return [f"DROP INDEX IF EXISTS {prefix}{self.index_name(i)}" for i in gone] + new
        return old.drop_sql() + self.create_sql()

    def same_in_database(self, old: Entity, connection: Connection) -> bool:
        if not isinstance(old, MaterializedView) or (old.indexes, old.with_data) != (
            self.indexes,
            self.with_data,
        ):
            return False
        return _same_query(connection, self, old)


def _same_query(
    connection: Connection, new: View | MaterializedView, old: View | MaterializedView
) -> bool:
    """The stored view's query vs ``new``'s, both as PostgreSQL prints them."""
    from .view_catalog import canonical, live

    stored = live(connection, old.schema, old.name)
    wanted = canonical(connection, new.definition)
    if stored is None or wanted is None:
        return new.definition == old.definition
    return stored == wanted
