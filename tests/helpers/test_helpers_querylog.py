"""log_queries: structured records with redacted parameters, slow-query report, EXPLAIN
(ANALYZE, BUFFERS) for slow SELECTs only, detachable."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, String, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_patterns import log_queries
from sa_patterns.querylog import QueryRecord


class Base(DeclarativeBase):
    pass


class Secret(Base):
    __tablename__ = "ql_secrets"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(50))
    token: Mapped[str] = mapped_column(String(50))


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(Secret), [{"owner": f"o{i}", "token": f"tok-{i}"} for i in range(20)])
    yield
    Base.metadata.drop_all(engine)


def records(caplog: pytest.LogCaptureFixture) -> list[QueryRecord]:
    return [r.query for r in caplog.records if hasattr(r, "query")]  # type: ignore[attr-defined]


def test_structured_records_with_redacted_parameters(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sa_patterns.queries")
    with log_queries(engine, slow_ms=10_000), Session(engine) as session:
        rows = session.scalars(select(Secret).where(Secret.token == "tok-3")).all()
        assert len(rows) == 1
    got = [r for r in records(caplog) if "ql_secrets" in r.statement]
    assert len(got) == 1
    rec = got[0]
    assert rec.rows == 1 and rec.duration_ms >= 0 and not rec.slow and rec.error is None
    assert "tok-3" not in repr(rec.as_dict()) and "tok-3" not in caplog.text
    assert list(rec.parameters.values()) == ["<str>"]  # names and types only
    assert caplog.records[-1].levelno in (logging.DEBUG, logging.WARNING)


def test_unredacted_on_request(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sa_patterns.queries")
    with log_queries(engine, redact=False), engine.connect() as conn:
        conn.execute(text("SELECT CAST(:x AS text)"), {"x": "visible"})
    assert any("visible" in repr(r.parameters) for r in records(caplog))


def test_slow_report_and_explain_for_selects_only(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sa_patterns.queries")
    log = log_queries(engine, slow_ms=0, explain=True)
    try:
        with engine.begin() as conn:
            conn.execute(select(Secret.id).where(Secret.owner == "o1"))
            conn.execute(select(Secret.id).where(Secret.owner == "o2"))
            conn.execute(text("UPDATE ql_secrets SET owner = owner WHERE id = 1"))
            # the caller's transaction is intact after the EXPLAIN savepoints
            assert conn.execute(text("SELECT count(*) FROM ql_secrets")).scalar() == 20
    finally:
        log.remove()
    slow = [r for r in log.slow if "ql_secrets" in r.statement]
    selects = [r for r in slow if r.statement.lstrip().startswith("SELECT ql_secrets.id")]
    assert len(selects) == 2 and all(r.plan and "actual time" in r.plan for r in selects)
    assert all("Buffers" in (r.plan or "") or "Seq Scan" in (r.plan or "") for r in selects)
    update = [r for r in slow if r.statement.startswith("UPDATE")]
    assert update and update[0].plan is None  # never re-executes a write
    assert all(r.levelno == logging.WARNING for r in caplog.records if hasattr(r, "query"))
    report = log.report()
    assert "slow queries" in report and "2×" in report and "actual time" in report
    stats = {sql: n for sql, n, _, _ in log.stats()}
    assert any(n == 2 for sql, n in stats.items() if "ql_secrets.owner" in sql)
    # the EXPLAIN did not write: still exactly the rows we inserted
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ql_secrets")).scalar() == 20


def test_errors_are_logged_and_remove_detaches(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sa_patterns.queries")
    log = log_queries(engine)
    with pytest.raises(Exception, match="no_such_table"), engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    failed = [r for r in records(caplog) if "no_such_table" in r.statement]
    assert failed and failed[0].error == "UndefinedTable"
    log.remove()
    before = len(records(caplog))
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert len(records(caplog)) == before
    log.remove()  # idempotent


async def test_async_engine(async_engine: AsyncEngine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sa_patterns.queries")
    log = log_queries(async_engine, slow_ms=0, explain=True)
    try:
        async with async_engine.connect() as conn:
            await conn.execute(text("SELECT count(*) FROM ql_secrets WHERE token = :t"), {"t": "tok-1"})
            assert (await conn.execute(text("SELECT 41 + 1"))).scalar() == 42  # still usable
    finally:
        log.remove()
    got = [r for r in records(caplog) if "token" in r.statement]
    assert got and got[0].parameters == {"t": "<str>"} and got[0].rows == 1
    assert got[0].plan and "actual time" in got[0].plan
    assert "tok-1" not in caplog.text
