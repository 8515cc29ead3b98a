"""Pool gauges and counters, including an invalidation after the server kills a connection."""

from __future__ import annotations

import pytest
from sqlalchemy import URL, create_engine, exc, text
from sqlalchemy.pool import NullPool

from sa_patterns.poolstats import monitor_pool, pool_stats


def test_gauges_and_counters(pg_url: URL) -> None:
    engine = create_engine(pg_url, pool_size=2, max_overflow=1)
    monitor = monitor_pool(engine)
    try:
        a, b, c = engine.connect(), engine.connect(), engine.connect()
        stats = pool_stats(engine)
        assert (stats.size, stats.checked_out, stats.overflow) == (2, 3, 1)
        victim = a.execute(text("SELECT pg_backend_pid()")).scalar_one()
        b.execute(text("SELECT pg_terminate_backend(:p)"), {"p": victim})
        with pytest.raises(exc.OperationalError):
            a.execute(text("SELECT 1"))
        for conn in (a, b, c):
            conn.close()
        snap = monitor.snapshot()
        assert snap["connects"] == 3 and snap["checkouts"] == 3 and snap["checkins"] == 3
        assert snap["invalidations"] == 1, "the killed connection was invalidated, not reused"
        with engine.connect() as conn:  # the pool replaces it
            assert conn.execute(text("SELECT 1")).scalar() == 1
        monitor.remove()
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert monitor.snapshot()["checkouts"] == 4  # counting stopped at remove()
    finally:
        engine.dispose()


def test_nullpool_has_no_gauges(pg_url: URL) -> None:
    engine = create_engine(pg_url, poolclass=NullPool)
    assert pool_stats(engine).size is None
    engine.dispose()
