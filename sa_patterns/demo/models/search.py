"""Full-text search: articles with a weighted generated vector, a GIN index and a trigram index."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from ...search import Searchable
from .base import Base


class SearchArticle(Searchable, Base):
    __tablename__ = "search_articles"
    __searchable__ = {"title": "A", "body": "B"}
    __search_config__ = "english"
    __search_trigram__ = ("title",)

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str]
