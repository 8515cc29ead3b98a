"""A short mixed load (threads and asyncio tasks) on a model using every pattern at once; the
invariants are checked by SQL afterwards. The 60-second run with figures is bench/bench_load.py."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import URL, create_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for bench.load
from bench.load import create_schema, invariants, run_load


def test_mixed_load_keeps_every_invariant(pg_url: URL, db_schema: str) -> None:
    url = pg_url.update_query_dict({"options": f"-csearch_path={db_schema},public"})
    engine = create_engine(url)
    create_schema(engine)
    engine.dispose()
    result = run_load(url, seconds=4, threads=4, tasks=4)
    assert result.errors == []
    assert all(result.changes[op] > 0 for op in ("insert", "update", "soft_delete")), result.changes
    assert {"search", "read"} <= set(result.latencies)
    assert invariants(url, result) == []
