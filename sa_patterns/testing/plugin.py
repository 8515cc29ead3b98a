"""pytest plugin (entry point ``pytest11``): a real PostgreSQL for every test run.

Given the application's models (``sa_patterns_models = myapp.models:Base`` in the pytest ini,
or a ``sa_patterns_metadata`` fixture), each test module's schema is built by the toolkit
(:func:`sa_patterns.create_all`: tables, triggers, functions, policies, row-level security,
grants; models managing no roles get the grants ``manage_access()`` would write) as the
**owner** role, a non-superuser, and the test fixtures log in as the **app** role
(NOSUPERUSER NOBYPASSRLS, owning nothing): tests run as production does, with every policy in
force. The roles (:mod:`sa_patterns.roles`) are made for the run (:mod:`.logins`). Without
models the fixtures connect as the server's superuser and build nothing, as before; so do they
with ``sa_patterns_app_role = false`` in the ini, or in a module marked
``pytestmark = pytest.mark.sa_patterns_superuser``.

Fixtures, widest scope first:

``pg_server``        session  the server (``DATABASE_URL`` or an embedded cluster started for the run)
``pg_url``           session  a fresh database created for this run (per xdist worker), dropped
                              after; the superuser's URL
``db_roles``         session  the run's owner, app and admin logins (:class:`.logins.RunRoles`)
``sa_patterns_metadata`` module the models to build (default: the ``sa_patterns_models`` ini)
``db_schema``        module   a fresh schema for the test module, holding the models, dropped after
``engine``           module   an engine logged in as the app role (or the superuser, see above)
                              whose connections use ``db_schema`` first on the search path
``owner_engine``     module   the same as the owner role (migrations, DDL)
``admin_engine``     module   the same as the admin role (``all_tenants()`` across tenants)
``superuser_engine`` module   the same as the server's superuser
``connection``       function a connection of ``engine`` inside an outer transaction, rolled back
``session``          function an installed ``Session`` joined to ``connection`` through savepoints
``async_engine`` / ``async_connection`` / ``async_session``: the same for asyncio
``sql``              function raw SQL on ``connection`` → rows; as the app role it runs under the
                              tenant in scope (``tenant_scope``/``all_tenants``), so row-level
                              security filters it as it filters the application
``superuser_sql``    function raw SQL as the superuser *inside* ``connection``'s transaction: what
                              the database holds past row-level security and grants
``query_counter``    function a started :class:`~sa_patterns.nplusone.QueryCounter` on ``connection``
``nplusone``         function ``with nplusone(max_statements=3): ...`` fails on N+1 lazy loads
``factories``        function :class:`~sa_patterns.testing.factories.Factories` on ``session``
                              (seed 0, or ``@pytest.mark.sa_patterns_seed(42)``)
``async_factories``  function the same on ``async_session`` (``await f.create(...)``)

The database is never mocked and a missing server is never a skip: without ``DATABASE_URL`` the
embedded server starts, and without that the run fails with a ConfigurationError; so does a
server where the roles cannot be created, or models that do not build.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from sqlalchemy import URL, Connection, Engine, MetaData, Row, create_engine, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from .._spec import load_metadata
from ..context import ALL_TENANTS_SETTING, TENANT_SETTING, current_tenant, is_all_tenants
from ..database import Server, scratch_database, server
from ..errors import ConfigurationError
from ..install import install
from ..nplusone import QueryCounter, nplusone_guard
from ..roles import RoleNames, use_roles
from ..schema import create_all, registered
from ..schema.access import Grant, access_entities
from ..schema.objects import Entity, quote
from .factories import AsyncFactories, Factories
from .logins import (
    RunRoles,
    create_logins,
    drop_owned,
    drop_roles,
    install_hatch,
    run_role_names,
    superuser_rows,
)

__all__ = ["SQL", "NPlusOneGuard"]

_MODELS_INI = "sa_patterns_models"
_APP_ROLE_INI = "sa_patterns_app_role"
_SUPERUSER_MARK = "sa_patterns_superuser"
_ROLE_ENV = {"owner": "SA_PATTERNS_OWNER_ROLE", "app": "SA_PATTERNS_APP_ROLE", "admin": "SA_PATTERNS_ADMIN_ROLE"}
_NAMES = pytest.StashKey[RoleNames]()
_SAVED_ENV = pytest.StashKey[dict[str, str | None]]()


class SQL(Protocol):
    """The ``sql`` fixture: ``sql("SELECT ... WHERE x = :x", x=1)`` → list of rows."""

    def __call__(self, statement: str, /, **params: Any) -> list[Row[Any]]: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        _MODELS_INI,
        "sa_patterns: the models each test module's schema is built from, as package.module:Base "
        "(a declarative base or a MetaData); one per line for several",
        type="linelist",
        default=[],
    )
    parser.addini(
        _APP_ROLE_INI,
        "sa_patterns: with models, build them as a non-superuser owner role and log the "
        "fixtures in as the app role (default true); false: the server's superuser, as before",
        type="bool",
        default=True,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sa_patterns: test uses the sa_patterns database fixtures")
    config.addinivalue_line(
        "markers", "sa_patterns_seed(n): the seed of the factories fixture for this test"
    )
    config.addinivalue_line(
        "markers",
        f"{_SUPERUSER_MARK}: (module-wide: pytestmark) this module's fixtures connect as the "
        "server's superuser, even with models configured",
    )
    # The run's role names, in force for everything the run does (create_all, migrations, CLI
    # subprocesses): cluster-wide roles, unique per run and per xdist worker.
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    names = run_role_names(worker)
    config.stash[_NAMES] = names
    config.stash[_SAVED_ENV] = {var: os.environ.get(var) for var in _ROLE_ENV.values()}
    for part, var in _ROLE_ENV.items():
        os.environ[var] = getattr(names, part)


def pytest_unconfigure(config: pytest.Config) -> None:
    for var, value in config.stash.get(_SAVED_ENV, {}).items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(mark.name == _SUPERUSER_MARK for mark in item.own_markers):
            raise pytest.UsageError(
                f"{item.nodeid}: {_SUPERUSER_MARK} applies to a whole module (its engines are "
                f"module-wide): write `pytestmark = pytest.mark.{_SUPERUSER_MARK}` at its top."
            )


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    try:
        srv = server()
    except ConfigurationError as exc:
        failure = f"sa_patterns: {exc}"
    else:
        failure = ""
    if failure:  # raised outside the handler: the message alone, without the chained tracebacks
        # One message for the run, not the same connection error under every test: the run
        # stops after this test (each xdist worker reports it once; pytest.exit would crash xdist).
        request.session.shouldstop = "sa_patterns: no database (the error above)"
        pytest.fail(failure, pytrace=False)
    try:
        yield srv
    finally:
        if srv.stop is not None:
            srv.stop()


@pytest.fixture(scope="session")
def pg_url(pg_server: Server, request: pytest.FixtureRequest) -> Iterator[URL]:
    # One database per run and per xdist worker ("main" without xdist).
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    names = request.config.stash[_NAMES]
    try:
        with scratch_database(pg_server.url, prefix=f"sap_test_{worker}") as url:
            try:
                yield url
            finally:
                drop_owned(url, names)  # before the database goes: its grants to the roles too
    finally:
        drop_roles(pg_server.url, names)  # what they hold elsewhere, then the roles


@pytest.fixture(scope="session")
def db_roles(pg_url: URL, request: pytest.FixtureRequest) -> RunRoles:
    """The run's owner, app and admin roles, with a login each (dropped at the end of the run)."""
    return create_logins(pg_url, request.config.stash[_NAMES])


@pytest.fixture(scope="session")
def _sa_patterns_hatch(pg_url: URL, db_roles: RunRoles) -> str:
    secret = secrets.token_hex(16)
    install_hatch(pg_url, db_roles, secret)
    return secret


_Models = MetaData | Sequence[MetaData] | None


@pytest.fixture(scope="module")
def sa_patterns_metadata(request: pytest.FixtureRequest) -> _Models:
    """The models each test module's schema is built from: the ``sa_patterns_models`` ini
    option by default. Override it (in a conftest or a test module) to return a ``MetaData``,
    several, ``MetaData()`` for the role model with nothing to build, or ``None`` for none."""
    specs: list[str] = request.config.getini(_MODELS_INI)
    if not specs:
        return None
    return [load_metadata(spec) for spec in specs]


def _metadatas(models: _Models) -> list[MetaData] | None:
    if models is None:
        return None
    if isinstance(models, MetaData):
        return [models]
    found = list(models)
    if not all(isinstance(m, MetaData) for m in found):
        raise ConfigurationError(
            "sa_patterns_metadata must return a MetaData (Base.metadata), a sequence of them, or None."
        )
    return found


def _schema_name(request: pytest.FixtureRequest) -> str:
    base = request.module.__name__.rsplit(".", 1)[-1] if request.module else "tests"
    return re.sub(r"[^a-z0-9_]", "_", f"t_{base}".lower())[:60]


def _search_path(schema: str) -> dict[str, Any]:
    return {"options": f"-csearch_path={schema},public"}


@dataclass(frozen=True)
class _Module:
    """One test module's database: its schema and, with the role model, the run's roles."""

    schema: str
    superuser_url: URL
    roles: RunRoles | None

    def url(self, part: str) -> URL:
        if self.roles is None:
            return self.superuser_url
        role: str = getattr(self.roles, part)
        return self.roles.url(self.superuser_url, role)


def _uses_roles(request: pytest.FixtureRequest, metadata: list[MetaData] | None) -> bool:
    if metadata is None or not request.config.getini(_APP_ROLE_INI):
        return False
    return request.node.get_closest_marker(_SUPERUSER_MARK) is None


@pytest.fixture(scope="module")
def _sa_patterns_module(
    pg_url: URL, sa_patterns_metadata: _Models, request: pytest.FixtureRequest
) -> Iterator[_Module]:
    metadata = _metadatas(sa_patterns_metadata)
    roles: RunRoles | None = (
        request.getfixturevalue("db_roles") if _uses_roles(request, metadata) else None
    )
    module = _Module(_schema_name(request), pg_url, roles)
    quoted = quote(module.schema)
    superuser = create_engine(pg_url)
    try:
        with superuser.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))
            owner = f" AUTHORIZATION {quote(roles.owner)}" if roles else ""
            conn.execute(text(f"CREATE SCHEMA {quoted}{owner}"))
        if metadata:
            _build(module, metadata)
        yield module
    finally:
        with superuser.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))
        superuser.dispose()


def _run(conn: Connection, entities: list[Entity]) -> None:
    for entity in entities:
        for statement in entity.create_statements():
            conn.exec_driver_sql(statement)


def _build(module: _Module, metadata: list[MetaData]) -> None:
    """The models built by the toolkit, as the owner role (the superuser without roles)."""
    builder = create_engine(module.url("owner"), connect_args=_search_path(module.schema))
    who = f"the owner role {module.roles.owner}" if module.roles else "the superuser"
    try:
        with ExitStack() as stack:
            if module.roles is not None:
                stack.enter_context(use_roles(module.roles.names))
            conn = stack.enter_context(builder.begin())
            for md in metadata:
                unmanaged = module.roles is not None and not any(
                    isinstance(e, Grant) for e in registered(md)
                )
                # models that do not manage the role model (no tenant table, no audit log, no
                # manage_access()) get what manage_access() would write, so the app role can use
                # them; the models themselves are left as they are. The schema's default
                # privileges first: views and materialized views created next inherit them.
                access = access_entities(md) if unmanaged else []
                _run(conn, [e for e in access if e.order <= 0])
                create_all(conn, md)
                _run(conn, [e for e in access if e.order > 0])
                if unmanaged and module.roles is not None:
                    for entity in registered(md):
                        if entity.kind == "matview_refresh":  # executable by the owner alone
                            conn.exec_driver_sql(
                                f"GRANT EXECUTE ON FUNCTION {entity.signature()} TO "  # type: ignore[attr-defined]
                                f"{quote(module.roles.names.app)}, {quote(module.roles.names.admin)}"
                            )
    except Exception as exc:
        raise ConfigurationError(
            f"sa_patterns: building the models in schema {module.schema} as {who} failed "
            f"({type(exc).__name__}: {exc}). The owner is not a superuser: what needs one "
            "(an untrusted extension, say) belongs in the server's setup; or opt out with "
            f"`{_APP_ROLE_INI} = false`."
        ) from exc
    finally:
        builder.dispose()


@pytest.fixture(scope="module")
def db_schema(_sa_patterns_module: _Module) -> str:
    """The test module's schema, with the models of ``sa_patterns_metadata`` built in it."""
    return _sa_patterns_module.schema


def _engine(module: _Module, part: str) -> Engine:
    return create_engine(module.url(part), connect_args=_search_path(module.schema))


@pytest.fixture(scope="module")
def engine(_sa_patterns_module: _Module) -> Iterator[Engine]:
    """Logged in as the app role (the superuser without models or when opted out)."""
    eng = _engine(_sa_patterns_module, "app")
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="module")
def owner_engine(_sa_patterns_module: _Module) -> Iterator[Engine]:
    """Logged in as the owner role, which built the schema (the superuser without roles)."""
    eng = _engine(_sa_patterns_module, "owner")
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="module")
def admin_engine(_sa_patterns_module: _Module) -> Iterator[Engine]:
    """Logged in as the admin role (sees every tenant inside ``all_tenants()``)."""
    if _sa_patterns_module.roles is None:
        raise ConfigurationError(
            "admin_engine needs the role model: configure the models (sa_patterns_models in the "
            "ini, or a sa_patterns_metadata fixture) and leave sa_patterns_app_role on."
        )
    eng = _engine(_sa_patterns_module, "admin")
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture(scope="module")
def superuser_engine(_sa_patterns_module: _Module) -> Iterator[Engine]:
    """Logged in as the server's superuser, which row-level security never stops."""
    eng = create_engine(_sa_patterns_module.superuser_url, connect_args=_search_path(_sa_patterns_module.schema))
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            if outer.is_active:
                outer.rollback()


@pytest.fixture
def session_factory(connection: Connection) -> sessionmaker[Session]:
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
    install(factory)
    return factory


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as s:
        yield s


# The tenant settings swapped in for one statement and back (read before being set).
_SWAP = text(
    "WITH held AS MATERIALIZED (SELECT coalesce(current_setting(:tn, true), '') AS tenant, "
    "coalesce(current_setting(:an, true), '') AS every) "
    "SELECT held.tenant, held.every, set_config(:tn, :tv, true), set_config(:an, :av, true) FROM held"
)
_RESTORE = text("SELECT set_config(:tn, :tv, true), set_config(:an, :av, true)")


def _scope_settings() -> dict[str, str]:
    tenant = current_tenant()
    return {
        "tn": TENANT_SETTING, "tv": "" if tenant is None else str(tenant),
        "an": ALL_TENANTS_SETTING, "av": "on" if is_all_tenants() else "",
    }


@pytest.fixture
def sql(connection: Connection, _sa_patterns_module: _Module) -> SQL:
    as_app = _sa_patterns_module.roles is not None

    def run(statement: str, /, **params: Any) -> list[Row[Any]]:
        if not as_app:
            result = connection.execute(text(statement), params)
            return list(result) if result.returns_rows else []
        held = connection.execute(_SWAP, _scope_settings()).one()
        result = connection.execute(text(statement), params)
        rows = list(result) if result.returns_rows else []
        # (a failed statement leaves nothing to restore: its savepoint's rollback undid the
        # swap, or the transaction is aborted)
        connection.execute(_RESTORE, {"tn": TENANT_SETTING, "tv": held[0], "an": ALL_TENANTS_SETTING, "av": held[1]})
        return rows

    return run


@pytest.fixture
def superuser_sql(connection: Connection, _sa_patterns_module: _Module, request: pytest.FixtureRequest) -> SQL:
    """Raw SQL as the server's superuser inside the test's own transaction (on ``connection``):
    it sees and may change the test's uncommitted rows, past row-level security and grants.
    A statement's rows are fetched by ``connection``'s role: functions in its select list
    run as that role."""
    if _sa_patterns_module.roles is None:  # connection is the superuser already
        def direct(statement: str, /, **params: Any) -> list[Row[Any]]:
            result = connection.execute(text(statement), params)
            return list(result) if result.returns_rows else []

        return direct
    secret: str = request.getfixturevalue("_sa_patterns_hatch")

    def run(statement: str, /, **params: Any) -> list[Row[Any]]:
        return superuser_rows(connection, secret, statement, params)

    return run


@pytest.fixture(scope="module")
async def async_engine(_sa_patterns_module: _Module) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(_sa_patterns_module.url("app"), connect_args=_search_path(_sa_patterns_module.schema))
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
async def async_connection(async_engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with async_engine.connect() as conn:
        outer = await conn.begin()
        try:
            yield conn
        finally:
            if outer.is_active:
                await outer.rollback()


@pytest.fixture
async def async_session(async_connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    factory = async_sessionmaker(
        bind=async_connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    install(factory)
    async with factory() as s:
        yield s


@pytest.fixture
def query_counter(connection: Connection) -> Iterator[QueryCounter]:
    """Counts statements the test sends on ``connection`` (sessions on it included)."""
    with QueryCounter(connection) as counter:
        yield counter


class NPlusOneGuard(Protocol):
    """The ``nplusone`` fixture: ``with nplusone(max_statements=None, max_lazy_loads=1): ...``
    guards the test's ``session`` (or the session/async session passed first)."""

    def __call__(
        self,
        target: Session | AsyncSession | None = None,
        /,
        *,
        max_statements: int | None = None,
        max_lazy_loads: int = 1,
    ) -> AbstractContextManager[QueryCounter]: ...


@pytest.fixture
def nplusone(request: pytest.FixtureRequest) -> NPlusOneGuard:
    def guard(
        target: Session | AsyncSession | None = None,
        /,
        *,
        max_statements: int | None = None,
        max_lazy_loads: int = 1,
    ) -> AbstractContextManager[QueryCounter]:
        watched = target if target is not None else request.getfixturevalue("session")
        return nplusone_guard(watched, max_statements=max_statements, max_lazy_loads=max_lazy_loads)

    return guard


@pytest.fixture
def factories(session: Session, request: pytest.FixtureRequest) -> Factories:
    """Factories bound to the test's ``session``; deterministic per seed."""
    marker = request.node.get_closest_marker("sa_patterns_seed")
    return Factories(session, seed=int(marker.args[0]) if marker else 0)


@pytest.fixture
def async_factories(async_session: AsyncSession, request: pytest.FixtureRequest) -> AsyncFactories:
    """:class:`~sa_patterns.testing.factories.AsyncFactories` on ``async_session``."""
    marker = request.node.get_closest_marker("sa_patterns_seed")
    return AsyncFactories(async_session, seed=int(marker.args[0]) if marker else 0)


def pytest_report_header(config: pytest.Config) -> list[str]:
    where = "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded PostgreSQL"
    lines = [f"sa_patterns: tests run on {where}"]
    specs: list[str] = config.getini(_MODELS_INI)
    if specs and config.getini(_APP_ROLE_INI):
        lines.append(
            f"sa_patterns: models {', '.join(specs)} built per module by create_all as a "
            "non-superuser owner role; engine/connection/session log in as the app role "
            "(NOSUPERUSER NOBYPASSRLS: row-level security applies)"
        )
    elif specs:
        lines.append(
            f"sa_patterns: models {', '.join(specs)} built per module by create_all; "
            f"{_APP_ROLE_INI} = false: the fixtures connect as the server's superuser"
        )
    else:
        lines.append(
            f"sa_patterns: no models configured ({_MODELS_INI} in the ini): nothing is built and "
            "the fixtures connect as the server's superuser, which row-level security never "
            "stops (modules overriding the sa_patterns_metadata fixture get the app role)"
        )
    return lines
