"""install(): target kinds, idempotence, one transaction-local set_config per transaction."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import sa_patterns
from sa_patterns._pipeline import settings_sql
from sa_patterns.errors import ConfigurationError
from sa_patterns.install import installed
from sa_patterns.testing.wire import RoundTrips

# coalesce: a setting never set in this backend reads NULL, one set in an earlier transaction ''
PROBE = text(
    "SELECT coalesce(current_setting('app.tenant_id', true), ''), "
    "coalesce(current_setting('app.actor_id', true), ''), "
    "coalesce(current_setting('app.request', true), '')"
)


@pytest.fixture
def small_engine(pg_url: URL) -> Iterator[Engine]:
    # One pooled connection: every transaction reuses the same backend.
    eng = create_engine(pg_url, pool_size=1, max_overflow=0)
    yield eng
    eng.dispose()


def test_context_reaches_postgres_once_per_transaction_in_no_round_trip_of_its_own(
    pg_url: URL,
) -> None:
    with RoundTrips(pg_url) as wire:
        engine = create_engine(wire.url, pool_size=1, max_overflow=0)
        plain, factory = sessionmaker(engine), sa_patterns.install(sessionmaker(engine))
        for maker in (plain, factory):  # connect, and prepare nothing differently
            with maker() as s:
                s.execute(PROBE)
        wire.reset()
        with plain() as s:
            for _ in range(5):
                s.execute(PROBE).one()
            s.commit()
        trips, statements = wire.count, wire.statements
        wire.reset()
        with sa_patterns.tenant_scope(5), sa_patterns.actor_scope("alice", ip="10.0.0.1"), factory() as s:
            for _ in range(5):
                row = s.execute(PROBE).one()
            assert row == ("5", "alice", '{"ip": "10.0.0.1"}')
            s.commit()
        engine.dispose()
    assert wire.statements == statements + 1, "one set_config per transaction, not per query"
    assert wire.count == trips, "and it shares the first statement's round trip"
    # values are bound parameters, never spliced into the SQL text
    sql, params = settings_sql({"app.actor_id": "alice", "app.tenant_id": "5"}, named=False)
    assert "alice" not in sql and "5" not in sql.replace("set_config", "")
    assert sorted(params.values()) == ["5", "alice", "app.actor_id", "app.tenant_id"]


def test_nothing_survives_into_the_pooled_connections_next_transaction(small_engine: Engine) -> None:
    factory = sa_patterns.install(sessionmaker(small_engine))
    with sa_patterns.tenant_scope(5), factory() as s:
        pid_a = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        s.commit()
    with factory() as s:  # no scope now, same backend
        assert s.execute(text("SELECT pg_backend_pid()")).scalar_one() == pid_a
        assert s.execute(PROBE).one() == ("", "", "")
    with small_engine.connect() as conn:  # raw connection, same backend
        assert conn.execute(PROBE).one() == ("", "", "")


def test_rollback_also_discards_settings(small_engine: Engine) -> None:
    factory = sa_patterns.install(sessionmaker(small_engine))
    with sa_patterns.tenant_scope(8), factory() as s:
        s.execute(PROBE)
        s.rollback()
    with small_engine.connect() as conn:
        assert conn.execute(PROBE).one()[0] == ""


def test_hostile_values_are_data(small_engine: Engine) -> None:
    factory = sa_patterns.install(sessionmaker(small_engine))
    hostile = "1'); DROP TABLE pg_class; --"
    with sa_patterns.tenant_scope(hostile), sa_patterns.actor_scope("' or 1=1 --"), factory() as s:
        assert s.execute(PROBE).one()[:2] == (hostile, "' or 1=1 --")


def test_install_is_idempotent_and_uninstall_removes(small_engine: Engine) -> None:
    maker = sessionmaker(small_engine)
    sa_patterns.install(maker)
    once = len(maker().dispatch.do_orm_execute), len(maker().dispatch.before_flush)
    sa_patterns.install(maker)
    assert (len(maker().dispatch.do_orm_execute), len(maker().dispatch.before_flush)) == once
    assert once[0] > 0
    with sa_patterns.tenant_scope(1), maker() as s:
        assert s.execute(PROBE).one()[0] == "1"
    assert installed(maker)
    sa_patterns.uninstall(maker)
    assert not installed(maker)
    with sa_patterns.tenant_scope(1), maker() as s:
        assert s.execute(PROBE).one()[0] == ""


def test_install_does_not_touch_other_sessions(small_engine: Engine) -> None:
    sa_patterns.install(sessionmaker(small_engine))
    with sa_patterns.tenant_scope(3):
        with Session(small_engine) as s:  # the global Session class: untouched
            assert s.execute(PROBE).one()[0] == ""
        with sessionmaker(small_engine)() as s:  # another factory: untouched
            assert s.execute(PROBE).one()[0] == ""


def test_install_accepts_each_target_kind(small_engine: Engine) -> None:
    class MySession(Session):
        pass

    scoped = scoped_session(sessionmaker(small_engine))
    for target, make in [
        (MySession, lambda: MySession(small_engine)),
        (scoped, lambda: scoped()),
    ]:
        sa_patterns.install(target)
        with sa_patterns.tenant_scope(11):
            s = make()
            try:
                assert s.execute(PROBE).one()[0] == "11"
            finally:
                s.close()
    scoped.remove()
    single = Session(small_engine)
    sa_patterns.install(single)
    with sa_patterns.tenant_scope(12):
        assert single.execute(PROBE).one()[0] == "12"
    single.close()


@pytest.mark.parametrize("bad", [Session, AsyncSession, object(), "sessionmaker", 42])
def test_install_refuses_global_or_wrong_targets(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        sa_patterns.install(bad)


async def test_async_sessionmaker(pg_url: URL) -> None:
    eng = create_async_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        maker = sa_patterns.install(async_sessionmaker(eng))
        with sa_patterns.tenant_scope("t-async"), sa_patterns.actor_scope(7):
            async with maker() as s:
                row = (await s.execute(PROBE)).one()
                assert row[:2] == ("t-async", "7")
        async with maker() as s:
            assert (await s.execute(PROBE)).one()[0] == ""
        # AsyncSession subclass target
        class MyAsync(AsyncSession):
            pass

        sa_patterns.install(MyAsync)
        with sa_patterns.tenant_scope(4):
            async with MyAsync(eng) as s:
                assert (await s.execute(PROBE)).one()[0] == "4"
        async with AsyncSession(eng) as s:  # the base class stays untouched
            with sa_patterns.tenant_scope(4):
                assert (await s.execute(PROBE)).one()[0] == ""
    finally:
        await eng.dispose()


def test_install_refuses_the_session_classes_of_libraries() -> None:
    """Installing on SQLAlchemy's or SQLModel's own session class would reach every session of
    the process; the app's own subclass is fine, and leaves the library's class alone."""
    import sqlmodel
    from sqlmodel.ext.asyncio.session import AsyncSession as SQLModelAsyncSession

    for cls in (Session, AsyncSession, sqlmodel.Session, SQLModelAsyncSession):
        with pytest.raises(ConfigurationError, match=rf"install\({cls.__name__}\) would change every"):
            sa_patterns.install(cls)

    class AppAsyncSession(SQLModelAsyncSession):
        pass

    try:
        sa_patterns.install(AppAsyncSession)
        assert AppAsyncSession.sync_session_class is not sqlmodel.Session
        assert issubclass(AppAsyncSession.sync_session_class, sqlmodel.Session)
        assert installed(AppAsyncSession)
    finally:
        sa_patterns.uninstall(AppAsyncSession)
