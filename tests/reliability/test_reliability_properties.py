"""Property-based tests where input is arbitrary: cursors and tenant ids (search text and
encryption envelopes have their own in tests/search and tests/encryption)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, String, event, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import InvalidCursor, TenantMixin, paginate
from sa_patterns.errors import ConfigurationError, SAPatternsError

KEY = "property-test-key"
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "prop_rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    rank: Mapped[int | None]
    label: Mapped[str | None] = mapped_column(String(20))


class Doc(TenantMixin, Base):
    __tablename__ = "prop_docs"
    __tenant_type__ = String(200)
    __rls__ = True
    id: Mapped[int] = mapped_column(primary_key=True)


@pytest.fixture(scope="module")
def tables(engine: Engine) -> Iterator[Engine]:
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)
        conn.execute(
            text("INSERT INTO prop_rows (id, rank, label) SELECT g, CASE WHEN g % 5 = 0 THEN NULL ELSE g % 7 END, "
                 "CASE WHEN g % 3 = 0 THEN NULL ELSE chr(97 + g % 26) END FROM generate_series(1, 200) g")
        )
    yield engine


@SETTINGS
@given(cursor=st.one_of(st.text(max_size=300), st.binary(max_size=200).map(lambda b: b.hex())))
def test_arbitrary_cursors_are_refused_before_any_sql(tables: Engine, cursor: str) -> None:
    statements: list[str] = []
    with tables.connect() as conn:
        listener = lambda *a: statements.append(a[2])  # noqa: E731
        event.listen(conn, "before_cursor_execute", listener)
        with Session(conn) as s, pytest.raises(InvalidCursor):
            paginate(s, select(Row), order_by=[Row.rank.desc().nulls_last()], after=cursor, key=KEY)
        assert statements == []


# Each ends with the primary key so "the database's order" is one order (without it,
# paginate() appends the key in the last column's direction).
ORDERS: dict[str, Any] = {
    "rank desc nulls last": [Row.rank.desc().nulls_last(), Row.id.desc()],
    "rank asc nulls first, label desc": [Row.rank.asc().nulls_first(), Row.label.desc(), Row.id.asc()],
    "label asc nulls last, rank desc nulls first": [Row.label.asc().nulls_last(), Row.rank.desc().nulls_first(), Row.id.asc()],
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(order=st.sampled_from(sorted(ORDERS)), limit=st.integers(min_value=1, max_value=60))
def test_pages_cover_every_row_once_in_database_order(tables: Engine, order: str, limit: int) -> None:
    with Session(tables) as s:
        expected = s.scalars(select(Row.id).order_by(*ORDERS[order])).all()
        page = paginate(s, select(Row), order_by=ORDERS[order], limit=limit, key=KEY)
        seen = [r.id for r in page.items]
        while page.has_more:
            page = paginate(s, select(Row), order_by=ORDERS[order], after=page.next_cursor, limit=limit, key=KEY)
            seen += [r.id for r in page.items]
    assert seen == list(expected)


@pytest.mark.usefixtures("tables")  # prop_docs: without it the test depends on which ran before
@SETTINGS
@given(tenant=st.one_of(st.text(max_size=200), st.integers(), st.uuids(), st.booleans(), st.floats(), st.none()))
def test_arbitrary_tenant_ids_are_data_or_a_clear_error(connection: Connection, tenant: Any) -> None:
    factory = sa_patterns.install(sessionmaker(bind=connection, join_transaction_mode="create_savepoint"))
    try:
        with sa_patterns.tenant_scope(tenant), factory() as s:
            s.add(Doc(id=1))
            s.flush()
            stored = s.execute(text("SELECT tenant_id, current_setting('app.tenant_id') FROM prop_docs")).one()
            # the value went in as data, exactly, and came back as the same data
            assert stored == (str(tenant), str(tenant))
            assert s.scalars(select(Doc.tenant_id)).all() == [str(tenant)]
            s.rollback()
    except SAPatternsError as exc:
        assert isinstance(exc, ConfigurationError | sa_patterns.TenantRequired | sa_patterns.TenantViolation)
        return
