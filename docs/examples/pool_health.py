"""Pool gauges and event counters for health endpoints and dashboards."""

from __future__ import annotations

from sqlalchemy import URL, create_engine, text

from sa_patterns.poolstats import monitor_pool, pool_stats


def main(url: URL) -> None:
    engine = create_engine(url, pool_size=5, max_overflow=2, pool_pre_ping=True)
    monitor = monitor_pool(engine)
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        assert pool_stats(engine).checked_out == 1
    snap = monitor.snapshot()  # e.g. expose as JSON on /health
    assert snap["connects"] == 1 and snap["checkouts"] == 1 and snap["checkins"] == 1
    assert snap["size"] == 5 and snap["checked_out"] == 0
    monitor.remove()
    engine.dispose()
