"""sa_patterns._compat: hooks behave the same on SQLAlchemy 2.0 and 2.1.

Run on both: ``nox -s tests-sqlalchemy-2.0`` (2.0.30 and the newest 2.0) and ``nox -s tests`` (2.1).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import (
    Connection,
    Engine,
    ForeignKey,
    event,
    exists,
    false,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    ORMExecuteState,
    Session,
    mapped_column,
    with_loader_criteria,
)

from sa_patterns._compat import add_parameters, where_entities_as_froms


class Base(DeclarativeBase):
    pass


class Parent(Base):
    __tablename__ = "compat_parent"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Child(Base):
    __tablename__ = "compat_child"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("compat_parent.id"))
    hidden: Mapped[bool] = mapped_column(default=False)
    note: Mapped[str | None]


@pytest.fixture(scope="module", autouse=True)
def _tables(engine: Engine) -> Iterator[None]:
    Base.metadata.create_all(engine)
    yield
    Base.metadata.drop_all(engine)


def _fill_note(state: ORMExecuteState) -> Result[Any] | None:
    """A hook that adds ``note`` to every parameter set of an ORM bulk INSERT/UPDATE."""
    params = state.parameters
    if not (state.is_insert or state.is_update) or not params:
        return None
    if isinstance(params, Mapping):
        return add_parameters(state, {**params, "note": "filled"})
    return add_parameters(state, [{**p, "note": "filled"} for p in params])


def _hide(state: ORMExecuteState) -> None:
    """What install() does: hidden children are filtered wherever the statement names them."""
    if state.is_select:
        state.statement = where_entities_as_froms(state.statement).options(
            with_loader_criteria(Child, lambda cls: cls.hidden == false(), include_aliases=True)
        )


def _session(connection: Connection, hook: Any) -> Session:
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    event.listen(session, "do_orm_execute", hook)
    return session


def _rows(connection: Connection) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in connection.execute(
        text("SELECT id, parent_id, hidden, note FROM compat_child ORDER BY id"))]


def _seed(connection: Connection) -> None:
    connection.execute(insert(Parent), [{"id": 1, "name": "visible child"},
                                        {"id": 2, "name": "hidden child"},
                                        {"id": 3, "name": "no child"}])
    connection.execute(insert(Child), [{"id": 10, "parent_id": 1, "hidden": False},
                                       {"id": 20, "parent_id": 2, "hidden": True}])


def test_bulk_insert_and_update_get_the_hooks_parameters(connection: Connection) -> None:
    connection.execute(insert(Parent).values(id=1, name="p"))
    rows = [{"id": 1, "parent_id": 1}, {"id": 2, "parent_id": 1}]
    with _session(connection, _fill_note) as s:
        s.execute(insert(Child), rows)
        s.execute(insert(Child), {"id": 3, "parent_id": 1})
        assert _rows(connection) == [(1, 1, False, "filled"), (2, 1, False, "filled"),
                                     (3, 1, False, "filled")]
        changes = [{"id": 1, "hidden": True}]
        s.execute(update(Child), changes)  # ORM bulk UPDATE by primary key
        assert _rows(connection)[0] == (1, 1, True, "filled")
    # the caller's parameter lists are never changed
    assert rows == [{"id": 1, "parent_id": 1}, {"id": 2, "parent_id": 1}]
    assert changes == [{"id": 1, "hidden": True}]


async def test_async_bulk_insert_gets_the_hooks_parameters(async_connection: AsyncConnection) -> None:
    await async_connection.execute(insert(Parent).values(id=1, name="p"))
    session = AsyncSession(bind=async_connection, join_transaction_mode="create_savepoint")
    event.listen(session.sync_session, "do_orm_execute", _fill_note)
    async with session as s:
        await s.execute(insert(Child), [{"id": 1, "parent_id": 1}])
        rows = await async_connection.execute(text("SELECT id, note FROM compat_child"))
        assert [tuple(r) for r in rows] == [(1, "filled")]


def test_criteria_reach_entities_named_only_in_where(connection: Connection) -> None:
    _seed(connection)
    with _session(connection, _hide) as s:
        has_child = exists().where(Child.parent_id == Parent.id)
        assert s.scalars(select(Parent.id).where(has_child).order_by(Parent.id)).all() == [1]
        assert s.scalar(select(exists().where(Child.id == 20))) is False
        assert s.scalar(select(exists().where(Child.id == 10))) is True
        assert s.scalar(select(func.count()).where(Child.parent_id == 2)) == 0
        counted = select(func.count(Child.id)).where(Child.parent_id == Parent.id).scalar_subquery()
        assert s.execute(select(Parent.id, counted).order_by(Parent.id)).all() == [
            (1, 1), (2, 0), (3, 0)]
        # a join names the entity already; filtered as always
        joined = select(Parent.id).join(Child, Child.parent_id == Parent.id)
        assert s.scalars(joined.where(Child.id > 0)).all() == [1]


@pytest.mark.parametrize("statement", [
    select(Parent).where(exists().where(Child.parent_id == Parent.id)),
    select(exists().where(Child.id == 1)),
    select(func.count()).where(Child.id == 1),
    select(Parent.id, select(func.count(Child.id)).where(Child.parent_id == Parent.id)
           .scalar_subquery()),
    update(Parent).where(exists().where(Child.parent_id == Parent.id)).values(name="x"),
], ids=["exists", "select-exists", "count", "scalar-subquery", "update-exists"])
def test_rewrite_keeps_the_sql(statement: Any) -> None:
    assert str(where_entities_as_froms(statement)) == str(statement)


def test_rewrite_leaves_joins_and_plain_selects_alone() -> None:
    joined = select(Parent).join(Child, Child.parent_id == Parent.id).where(Child.id == 1)
    plain = select(Parent).where(Parent.id == 1)
    assert where_entities_as_froms(joined) is joined
    assert where_entities_as_froms(plain) is plain
