"""The settings ride in a pipeline with the statement after them (sa_patterns._pipeline), on that
statement's own cursor: what the statement returns must be its own, never the set_config's row
(rowcount, RETURNING rows, columns), for execute and executemany alike."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker

import sa_patterns

SETTING = text("SELECT current_setting('app.tenant_id', true)")


@pytest.fixture
def engine(pg_url: URL) -> Iterator[Engine]:
    # insertmanyvalues off: a multi-row INSERT goes through the driver's executemany
    eng = create_engine(pg_url, pool_size=1, max_overflow=0, use_insertmanyvalues=False)
    yield eng
    eng.dispose()


@pytest.fixture
def table(engine: Engine) -> Iterator[str]:
    name = f"pipe_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)"))
        conn.execute(text(f"INSERT INTO {name} SELECT g, 'x' FROM generate_series(1, 5) g"))
    yield name
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {name}"))


def test_first_statement_keeps_its_rowcount_rows_and_columns(engine: Engine, table: str) -> None:
    factory = sa_patterns.install(sessionmaker(engine), wall="off")
    with sa_patterns.tenant_scope(7), factory() as s:
        result = s.execute(text(f"UPDATE {table} SET v = 'y' WHERE id > :n"), {"n": 2})
        assert result.rowcount == 3  # the set_config's one row is not counted
        assert s.execute(SETTING).scalar() == "7"
        s.rollback()
    with sa_patterns.tenant_scope(7), factory() as s:
        result = s.execute(text(
            f"DELETE FROM {table} WHERE id <= :n "
            "RETURNING id, current_setting('app.tenant_id', true) AS tenant"), {"n": 2})
        assert list(result.keys()) == ["id", "tenant"]
        assert sorted(result.all()) == [(1, "7"), (2, "7")]
        s.rollback()
    with sa_patterns.tenant_scope(7), factory() as s:
        s.execute(SETTING)
        with sa_patterns.tenant_scope(8):  # a switch: the settings ride with the next statement
            result = s.execute(text(f"SELECT id, v FROM {table} WHERE id = :n"), {"n": 4})
            assert list(result.keys()) == ["id", "v"]
            assert result.all() == [(4, "x")]
            assert s.execute(SETTING).scalar() == "8"


def test_executemany_after_the_settings_counts_its_own_rows(engine: Engine, table: str) -> None:
    factory = sa_patterns.install(sessionmaker(engine), wall="off")
    with sa_patterns.tenant_scope(7), factory() as s:
        result = s.execute(
            text(f"INSERT INTO {table} (id, v) VALUES (:id, :v)"),
            [{"id": 10 + i, "v": "z"} for i in range(3)],
        )
        assert result.rowcount == 3
        assert s.execute(SETTING).scalar() == "7"
        assert s.execute(text(f"SELECT count(*) FROM {table} WHERE v = 'z'")).scalar() == 3
        s.rollback()


def test_a_failing_first_statement_raises_and_leaves_nothing(engine: Engine, table: str) -> None:
    factory = sa_patterns.install(sessionmaker(engine), wall="off")
    with sa_patterns.tenant_scope(7), factory() as s:
        with pytest.raises(DBAPIError, match="duplicate key"):
            s.execute(text(f"INSERT INTO {table} (id, v) VALUES (1, 'dup')"))
        s.rollback()
        assert s.execute(SETTING).scalar() == "7"  # a new transaction sends them again
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT v FROM {table} WHERE id = 1")).scalar() == "x"
