"""Static checks of the public API's types (run by mypy, not pytest: `mypy tests/typing`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from typing_extensions import assert_type

import sa_patterns
from sa_patterns import Keyring, Page, Searchable, SoftDeleteMixin, TenantMixin, paginate
from sa_patterns.context import TenantId


class Base(DeclarativeBase):
    pass


class Article(SoftDeleteMixin, TenantMixin, Searchable, Base):
    __tablename__ = "typed_articles"
    __searchable__ = {"title": "A"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


def check(session: Session, ring: Keyring) -> None:
    assert_type(Article.search("postgres"), Select[Article])
    page = paginate(session, select(Article), order_by=[Article.id], limit=10)
    assert_type(page, Page[Any])
    assert_type(page.next_cursor, str | None)
    with sa_patterns.tenant_scope(1) as tenant:
        assert_type(tenant, TenantId)
    maker = sa_patterns.install(session)
    assert_type(maker, Session)


def check_hybrid(article: Article) -> None:
    assert_type(article.is_deleted, bool)
    select(Article).where(Article.is_deleted.is_(False))  # usable in SQL
