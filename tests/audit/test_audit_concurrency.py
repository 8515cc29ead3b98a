"""8 concurrent writers, mixed statements: exactly one log entry per changed row.

Each writer works on its own key range plus one hot row everybody updates, in transactions of
100 statements, one in ten rolled back. It counts the rows its committed statements really
changed (rowcount of changing statements; no-op updates count zero), and the log must hold
exactly that many entries: none lost, none duplicated, none for rolled-back or no-op work.
The writers are the plugin's app role (the triggers write the log as it); the log is counted
by its owner, who sees every entry.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest
from audit_models import Base
from sqlalchemy import Engine, MetaData, text

WRITERS = 8
STATEMENTS = 5_000  # per writer, as the issue asks
BATCH = 100


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO au_doc (id, title, price) VALUES (0, 'hot', 0)"))
    yield


def writer(engine: Engine, n: int, expected: dict[int, int], errors: list[BaseException]) -> None:
    rnd = random.Random(n)
    base = (n + 1) * 1_000_000
    next_id = base
    live: list[int] = []
    changed = 0
    try:
        with engine.connect() as conn:
            for start in range(0, STATEMENTS, BATCH):
                pending = 0
                with conn.begin() as tx:
                    for _ in range(BATCH):
                        kind = rnd.random()
                        if kind < 0.3 or not live:
                            next_id += 1
                            conn.execute(text("INSERT INTO au_doc (id, title, price) VALUES (:i, 't', 0)"), {"i": next_id})
                            live.append(next_id)
                            pending += 1
                        elif kind < 0.5:
                            r = conn.execute(text("UPDATE au_doc SET price = price + 1 WHERE id = :i"), {"i": rnd.choice(live)})
                            pending += r.rowcount
                        elif kind < 0.6:
                            conn.execute(text("UPDATE au_doc SET price = price WHERE id = :i"), {"i": rnd.choice(live)})
                        elif kind < 0.7:
                            # a bulk update over the writer's 50 newest ids (a window, so the
                            # run stays linear in the number of statements)
                            r = conn.execute(text("UPDATE au_doc SET price = price + 1 WHERE id BETWEEN :a AND :b"), {"a": max(base, next_id - 50), "b": next_id})
                            pending += r.rowcount
                        elif kind < 0.8:
                            r = conn.execute(text("UPDATE au_doc SET price = price + 1 WHERE id = 0"))
                            pending += r.rowcount
                        elif kind < 0.9:
                            victim = live.pop(rnd.randrange(len(live)))
                            r = conn.execute(text("DELETE FROM au_doc WHERE id = :i"), {"i": victim})
                            pending += r.rowcount
                        else:
                            r = conn.execute(
                                text("UPDATE au_doc SET deleted_at = CASE WHEN deleted_at IS NULL THEN now() END WHERE id = :i"),
                                {"i": rnd.choice(live)},
                            )
                            pending += r.rowcount
                    rolled_back = (start // BATCH) % 10 == 9
                    if rolled_back:
                        tx.rollback()
                if rolled_back:
                    # the batch's rows are gone again: resync our view of the key range
                    with conn.begin():
                        live = [r[0] for r in conn.execute(
                            text("SELECT id FROM au_doc WHERE id BETWEEN :a AND :b ORDER BY id"),
                            {"a": base + 1, "b": base + 999_999})]
                    next_id = max([next_id, *live])  # ids are never reused
                    continue
                changed += pending
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)
    expected[n] = changed


def test_concurrent_writers_one_entry_per_changed_row(engine: Engine, owner_engine: Engine) -> None:
    with owner_engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one()
    expected: dict[int, int] = {}
    errors: list[BaseException] = []
    threads = [threading.Thread(target=writer, args=(engine, n, expected, errors)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with owner_engine.connect() as conn:
        logged = conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one() - before
        duplicates = conn.execute(text(
            "SELECT count(*) FROM (SELECT transaction_id, primary_key, new_row, old_row, count(*) "
            "FROM audit_log WHERE operation IN ('INSERT', 'DELETE') GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d")).scalar_one()
        hot = conn.execute(text("SELECT price FROM au_doc WHERE id = 0")).scalar_one()
        hot_entries = conn.execute(text(
            "SELECT count(*) FROM audit_log WHERE primary_key = '{\"id\": 0}' AND operation = 'UPDATE'")).scalar_one()
    assert logged == sum(expected.values())
    assert duplicates == 0
    # the hot row: every committed increment is one entry
    assert hot_entries == hot
