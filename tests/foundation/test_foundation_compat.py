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


# --- the private statement parts _compat reads and writes (pinned on 2.0.30, 2.0.x and 2.1) ---


class Item(Base):
    __tablename__ = "compat_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


def test_insert_parts_read_values_multi_values_and_select() -> None:
    from sa_patterns._compat import insert_parts

    one = insert_parts(insert(Item).values(id=1, name="a"))
    assert {getattr(k, "key", k): v for k, v in one.values.items()}.keys() == {"id", "name"}
    assert one.multi is None and one.select is None
    many = insert_parts(insert(Item).values([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]))
    assert [{getattr(k, "key", k): v for k, v in r.items()} for r in many.multi or []] == [
        {"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    source = select(Item.id + 10, Item.name)
    copied = insert_parts(insert(Item).from_select(["id", "name"], source))
    assert copied.select is source and copied.names == ["id", "name"]


def test_replace_insert_keeps_returning_and_swaps_the_parts() -> None:
    from sqlalchemy.dialects import postgresql

    from sa_patterns._compat import replace_insert

    stmt = insert(Item).values([{"id": 1, "name": "a"}]).returning(Item.id)
    swapped = replace_insert(stmt, multi=[{"id": 2, "name": "b"}, {"id": 3, "name": "c"}])
    sql = str(swapped.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    assert "VALUES (2, 'b'), (3, 'c') RETURNING compat_items.id" in sql, sql
    chosen = replace_insert(
        insert(Item).from_select(["id"], select(Item.id)), select=select(Item.id, Item.name),
        names=["id", "name"],
    )
    sql = str(chosen.compile(dialect=postgresql.dialect()))
    assert sql.startswith("INSERT INTO compat_items (id, name) SELECT"), sql


def test_update_values_reads_values_and_ordered_values() -> None:
    from sa_patterns._compat import update_values

    [values] = update_values(update(Item).values(name="x"))
    assert {getattr(k, "key", k) for k in values} == {"name"}
    ordered = update_values(update(Item).ordered_values((Item.name, "y")))
    assert [[getattr(v, "value", v) for v in d.values()] for d in ordered] == [["y"]]


def test_conflict_clause_read_and_rewritten() -> None:
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    from sa_patterns._compat import conflict_set, conflict_update, with_conflict_where

    stmt = pg_insert(Item).values(id=1, name="a")
    stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"name": stmt.excluded.name})
    clause = conflict_update(stmt)
    assert clause is not None
    assert [getattr(k, "key", k) for k, _ in conflict_set(clause)] == ["name"]
    guarded = with_conflict_where(stmt, Item.__table__.c.id > 0)
    sql = str(guarded.compile(dialect=postgresql.dialect()))
    assert "ON CONFLICT (id) DO UPDATE SET name = excluded.name WHERE compat_items.id >" in sql, sql
    assert conflict_update(pg_insert(Item).values(id=1, name="a").on_conflict_do_nothing()) is None


def test_explicit_froms_and_raw_columns() -> None:
    from sqlalchemy import join

    from sa_patterns._compat import explicit_froms, raw_columns

    j = join(Item, Item.__table__.alias("other"), Item.id == Item.__table__.alias("o2").c.id)
    stmt = select(func.count()).select_from(j)
    assert explicit_froms(stmt) == (j,)
    assert explicit_froms(select(Item)) == ()
    assert len(raw_columns(select(Item.id, Item.name))) == 2


def test_loader_criteria_root_covers_the_classes_its_subclasses_names() -> None:
    """Tenancy's criteria root (one per tenant-column kind) relies on with_loader_criteria
    walking ``root.__subclasses__()`` to find the mapped classes it covers."""
    from sqlalchemy import column
    from sqlalchemy.dialects import postgresql

    class Other(Base):
        __tablename__ = "compat_others"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    class Root:
        name = column("name")

        @classmethod
        def __subclasses__(cls) -> list[type]:
            return [Item]

    option = with_loader_criteria(Root, lambda cls: cls.name == "x", include_aliases=True)
    dialect = postgresql.dialect()
    assert "WHERE compat_items.name = " in str(select(Item).options(option).compile(dialect=dialect))
    assert "WHERE" not in str(select(Other).options(option).compile(dialect=dialect))


def test_is_orphan_follows_the_unit_of_works_decision(session: Session) -> None:
    """soft delete turns delete-orphan removals into soft deletes by asking the unit of work's
    own orphan test (_compat.is_orphan): a child removed from its parent's collection is an
    orphan, one still held is not."""
    from sqlalchemy import inspect
    from sqlalchemy.orm import relationship

    from sa_patterns._compat import is_orphan

    class OBase(DeclarativeBase):
        pass

    class Parent(OBase):
        __tablename__ = "compat_orphan_parents"
        id: Mapped[int] = mapped_column(primary_key=True)
        kids: Mapped[list[Kid]] = relationship(cascade="all, delete-orphan")

    class Kid(OBase):
        __tablename__ = "compat_orphan_kids"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int] = mapped_column(ForeignKey("compat_orphan_parents.id"))

    OBase.metadata.create_all(session.connection())
    parent = Parent(id=1, kids=[Kid(id=1), Kid(id=2)])
    session.add(parent)
    session.flush()
    gone, kept = parent.kids
    parent.kids.remove(gone)
    assert is_orphan(inspect(gone)) and not is_orphan(inspect(kept))


def test_parent_entity_tells_an_entitys_elements_from_plain_core() -> None:
    """The tenant wall tells an entity named in a SELECT (its loader criteria reach it) from a
    plain table or column (which the explicit-join scoping must handle) by the ORM's
    ``parententity`` annotation (_compat.parent_entity), on every supported SQLAlchemy."""
    from sqlalchemy import inspect

    from sa_patterns._compat import parent_entity, raw_columns

    class PBase(DeclarativeBase):
        pass

    class Thing(PBase):
        __tablename__ = "compat_things"
        id: Mapped[int] = mapped_column(primary_key=True)

    entity, column = raw_columns(select(Thing, Thing.id))
    assert parent_entity(entity) is inspect(Thing) and parent_entity(column) is inspect(Thing)
    table = Thing.__table__
    assert parent_entity(table) is None and parent_entity(table.c.id) is None
    assert parent_entity(raw_columns(select(table))[0]) is None


def test_nested_selects_finds_what_a_full_walk_finds() -> None:
    """The wall's walk for nested SELECTs (_compat.nested_selects) skips tables, columns and
    bound parameters; it must find every SELECT SQLAlchemy's full ``iterate`` finds."""
    from sqlalchemy import delete, lambda_stmt, union_all
    from sqlalchemy.orm import aliased
    from sqlalchemy.sql import Select
    from sqlalchemy.sql.visitors import iterate

    from sa_patterns._compat import nested_selects

    inner = select(Child.parent_id).where(Child.note == "x")
    cte = select(Parent.id).where(Parent.name == "a").cte()
    alias = aliased(Parent)
    statements = [
        select(Child).where(Child.id == 5),
        select(Parent).where(exists().where(Child.parent_id == Parent.id)),
        select(Parent).where(Parent.id.in_(inner)),
        select(Parent.id, inner.limit(1).scalar_subquery()),
        select(Parent).join(cte, cte.c.id == Parent.id),
        union_all(select(Parent.id), select(Child.id).where(Child.id.in_(select(alias.id)))),
        select(func.count()).select_from(select(Child).subquery()),
        insert(Parent).from_select(["id"], select(Child.id).where(exists().where(Parent.id == 1))),
        update(Parent).where(Parent.id.in_(inner)).values(name="x"),
        delete(Child).where(exists().where(Parent.id == Child.parent_id)),
        lambda_stmt(lambda: select(Child).where(Child.id == 5)),
    ]
    for statement in statements:
        expected = {id(e) for e in iterate(statement) if isinstance(e, Select)}
        assert {id(e) for e in nested_selects(statement)} == expected, statement
