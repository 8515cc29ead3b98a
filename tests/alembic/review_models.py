"""Models of the migration-review tests (imported, never collected): one model with every
pattern that writes plpgsql (Audited, Versioned) beside Searchable, TenantMixin and
SoftDeleteMixin, and a materialized view over a shared table for the doctor's freshness check.
``sa-patterns doctor --metadata review_models:Base`` loads them."""

from __future__ import annotations

from sqlalchemy import Index, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import (
    Audited,
    MaterializedView,
    Searchable,
    SoftDeleteMixin,
    TenantMixin,
    Versioned,
)


class Base(DeclarativeBase):
    pass


class Article(SoftDeleteMixin, TenantMixin, Versioned, Audited, Searchable, Base):
    __tablename__ = "rv_articles"
    __searchable__ = {"title": "A", "body": "B"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str]


class Topic(Base):
    __tablename__ = "rv_topics"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class TopicCount(MaterializedView, Base):
    __tablename__ = "rv_topic_count"
    __select__ = select(func.count(Topic.id).label("n"))
    __table_args__ = (Index("rv_topic_count_n", "n", unique=True),)
    n: Mapped[int] = mapped_column(primary_key=True)
