"""_compat.nested_selects reads a BinaryExpression's two sides directly instead of asking for its
children (a faster walk, SQLAlchemy 2.0's per-statement cost): it must find every SELECT that
SQLAlchemy's own walk finds, however deep in comparisons, and _where_entities every entity."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import ForeignKey, and_, exists, func, literal, not_, or_, select, union_all
from sqlalchemy.orm import DeclarativeBase, Mapped, aliased, mapped_column
from sqlalchemy.sql import Select, visitors

from sa_patterns._compat import _where_entities, nested_selects


class Base(DeclarativeBase):
    pass


class Parent(Base):
    __tablename__ = "ns_parent"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Child(Base):
    __tablename__ = "ns_child"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("ns_parent.id"))


def _statements() -> list[Any]:
    inner = select(Child.id).where(Child.parent_id == Parent.id)
    alias = aliased(Child)
    return [
        select(Parent).where(Parent.id == 1),
        select(Parent).where(Parent.id == inner.scalar_subquery()),
        select(Parent).where(inner.scalar_subquery() == Parent.id, Parent.name == "x"),
        select(Parent).where(Parent.id.in_(select(Child.parent_id).where(Child.id > 3))),
        select(Parent).where(or_(Parent.id == 2, and_(Parent.name == "a", exists(inner)))),
        select(Parent).where(not_(Parent.id == select(func.max(alias.id)).scalar_subquery())),
        select(Parent).where((Parent.id + select(literal(1)).scalar_subquery()) == 3),
        select(Parent).where(Parent.id == (select(Child.id).where(
            Child.id == select(alias.id).where(alias.parent_id == 5).scalar_subquery()
        ).scalar_subquery())),
        union_all(select(Parent.id).where(Parent.id == inner.scalar_subquery()), select(Child.id)),
        select(Parent.id).where(Child.parent_id == Parent.id, alias.id == Child.id),
    ]


@pytest.mark.parametrize("n", range(len(_statements())))
def test_finds_every_select_sqlalchemys_walk_finds(n: int) -> None:
    statement = _statements()[n]
    expected = {id(e) for e in visitors.iterate(statement) if isinstance(e, Select)}
    found = nested_selects(statement)
    assert {id(e) for e in found} == expected
    assert len(found) == len(expected) >= 1


def test_where_entities_sees_both_sides_of_every_comparison() -> None:
    alias = aliased(Child)
    statement = select(Parent.id).where(
        Child.parent_id == Parent.id, or_(alias.id == 4, literal(1) == alias.parent_id)
    )
    names = {info.class_.__name__ + ("*" if info.is_aliased_class else "")
             for info in _where_entities(statement)}
    assert names == {"Parent", "Child", "Child*"}
