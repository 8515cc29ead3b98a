"""Models shared by the soft-delete tests (imported by basename; keep the name unique)."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sa_patterns import SoftDeleteMixin, soft_unique


class Base(DeclarativeBase):
    pass


class Author(SoftDeleteMixin, Base):
    __tablename__ = "sd_author"
    __table_args__ = (soft_unique("email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(100))
    posts: Mapped[list[Post]] = relationship(
        back_populates="author", cascade="all, delete", order_by="Post.id"
    )


class Post(SoftDeleteMixin, Base):
    __tablename__ = "sd_post"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("sd_author.id"))
    title: Mapped[str] = mapped_column(String(100))
    author: Mapped[Author] = relationship(back_populates="posts")
    comments: Mapped[list[Comment]] = relationship(
        back_populates="post", cascade="all, delete", order_by="Comment.id"
    )


class Comment(SoftDeleteMixin, Base):
    __tablename__ = "sd_comment"

    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("sd_post.id"))
    body: Mapped[str] = mapped_column(String(100))
    post: Mapped[Post] = relationship(back_populates="comments")


class Guarded(SoftDeleteMixin, Base):
    """Raw SQL DELETE on this table becomes a soft delete (database trigger)."""

    __tablename__ = "sd_guarded"
    __soft_delete_guard__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Slugged(SoftDeleteMixin, Base):
    """Has a tenant_id column, as TenantMixin adds: soft_unique puts it first."""

    __tablename__ = "sd_slugged"
    __table_args__ = (soft_unique("slug", name="sd_slugged_slug_live"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    slug: Mapped[str] = mapped_column(String(50))
