"""``relationship(secondary=...)`` through a tenant or soft-delete table is refused when mappers
are configured: SQLAlchemy's loader criteria never reach a secondary table, so the collection
would show other tenants' and soft-deleted links, and an append would write a link row with no
``tenant_id``. The association-object recipe the error points to is filtered on every side, as
the app role on the schema the toolkit built (``superuser_sql`` reads what the database holds)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Engine, ForeignKey, Integer, MetaData, Table, select
from sqlalchemy.ext.associationproxy import AssociationProxy, association_proxy
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

import sa_patterns
from sa_patterns import ConfigurationError, SoftDeleteMixin, TenantMixin
from sa_patterns.testing.plugin import SQL
from sa_patterns.testing.rls import drop_tenant_references


def _refused(base: type[DeclarativeBase], *patterns: str) -> None:
    """Configuring ``base``'s registry raises a ConfigurationError matching every pattern."""
    try:
        with pytest.raises(ConfigurationError) as caught:
            base.registry.configure()
    finally:
        base.registry.dispose()  # a failed mapper would fail every later configure
    for pattern in (*patterns, "association object", "association_proxy"):
        assert pattern in str(caught.value), (pattern, str(caught.value))


def test_a_tenant_link_model_as_secondary_is_refused() -> None:
    class Base(DeclarativeBase):
        pass

    class Post(TenantMixin, Base):
        __tablename__ = "tn_sec_posts"
        id: Mapped[int] = mapped_column(primary_key=True)
        tags: Mapped[list[Tag]] = relationship(secondary="tn_sec_post_tags")

    class Tag(TenantMixin, Base):
        __tablename__ = "tn_sec_tags"
        id: Mapped[int] = mapped_column(primary_key=True)

    class PostTag(TenantMixin, Base):
        __tablename__ = "tn_sec_post_tags"
        post_id: Mapped[int] = mapped_column(ForeignKey("tn_sec_posts.id"), primary_key=True)
        tag_id: Mapped[int] = mapped_column(ForeignKey("tn_sec_tags.id"), primary_key=True)

    _refused(Base, "Post.tags", "'tn_sec_post_tags'", "tenant_id")


def test_a_soft_delete_link_model_as_secondary_is_refused() -> None:
    class Base(DeclarativeBase):
        pass

    class Post(SoftDeleteMixin, Base):
        __tablename__ = "sd_sec_posts"
        id: Mapped[int] = mapped_column(primary_key=True)

    class Tag(Base):
        __tablename__ = "sd_sec_tags"
        id: Mapped[int] = mapped_column(primary_key=True)
        posts: Mapped[list[Post]] = relationship(secondary=lambda: PostTag.__table__)

    class PostTag(SoftDeleteMixin, Base):
        __tablename__ = "sd_sec_post_tags"
        post_id: Mapped[int] = mapped_column(ForeignKey("sd_sec_posts.id"), primary_key=True)
        tag_id: Mapped[int] = mapped_column(ForeignKey("sd_sec_tags.id"), primary_key=True)

    _refused(Base, "Tag.posts", "'sd_sec_post_tags'", "deleted_at", "DELETE the link row")


@pytest.mark.parametrize("column", ["tenant_id", "deleted_at"])
def test_a_plain_table_with_the_column_is_refused_too(column: str) -> None:
    class Base(DeclarativeBase):
        pass

    link = Table(
        "tn_sec_plain_links",
        Base.metadata,
        Column("post_id", ForeignKey("tn_sec_plain_posts.id"), primary_key=True),
        Column("tag_id", ForeignKey("tn_sec_plain_tags.id"), primary_key=True),
        Column(column, Integer),
    )

    class Post(SoftDeleteMixin, TenantMixin, Base):
        __tablename__ = "tn_sec_plain_posts"
        id: Mapped[int] = mapped_column(primary_key=True)
        tags: Mapped[list[Tag]] = relationship(secondary=link, back_populates="posts")

    class Tag(SoftDeleteMixin, TenantMixin, Base):
        __tablename__ = "tn_sec_plain_tags"
        id: Mapped[int] = mapped_column(primary_key=True)
        posts: Mapped[list[Post]] = relationship(secondary=link, back_populates="tags")

    _refused(Base, "'tn_sec_plain_links'", column, "A plain Table secondary=")


@pytest.mark.parametrize("link_first", [True, False], ids=["link model first", "link model last"])
def test_a_relationship_between_plain_models_is_checked(link_first: bool) -> None:
    """Neither side is a mixin model: the link model's check still reaches the relationship,
    whichever mapper is configured first."""

    class Base(DeclarativeBase):
        pass

    def link() -> type:
        class Membership(TenantMixin, Base):
            __tablename__ = "tn_sec_memberships"
            user_id: Mapped[int] = mapped_column(ForeignKey("tn_sec_users.id"), primary_key=True)
            group_id: Mapped[int] = mapped_column(ForeignKey("tn_sec_groups.id"), primary_key=True)

        return Membership  # held below: a registry holds its classes weakly

    if link_first:
        membership = link()

    class User(Base):
        __tablename__ = "tn_sec_users"
        id: Mapped[int] = mapped_column(primary_key=True)
        groups: Mapped[list[Group]] = relationship(secondary="tn_sec_memberships")

    class Group(Base):
        __tablename__ = "tn_sec_groups"
        id: Mapped[int] = mapped_column(primary_key=True)

    if not link_first:
        membership = link()
    _refused(Base, "User.groups", "'tn_sec_memberships'")
    del membership


def test_a_plain_secondary_between_tenant_models_is_allowed() -> None:
    class Base(DeclarativeBase):
        pass

    link = Table(
        "tn_sec_ok_links",
        Base.metadata,
        Column("post_id", ForeignKey("tn_sec_ok_posts.id"), primary_key=True),
        Column("tag_id", ForeignKey("tn_sec_ok_tags.id"), primary_key=True),
    )

    class Post(TenantMixin, Base):
        __tablename__ = "tn_sec_ok_posts"
        id: Mapped[int] = mapped_column(primary_key=True)
        tags: Mapped[list[Tag]] = relationship(secondary=link)

    class Tag(TenantMixin, Base):
        __tablename__ = "tn_sec_ok_tags"
        id: Mapped[int] = mapped_column(primary_key=True)

    Base.registry.configure()  # the tags themselves are filtered: nothing to refuse
    Base.registry.dispose()


# --------------------------------------------------------------------------------------------
# the recipe the errors point to: an association object, and a proxy for the collection


class Base(DeclarativeBase):
    pass


class Post(TenantMixin, Base):
    __tablename__ = "tn_sec_recipe_posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    tag_links: Mapped[list[PostTag]] = relationship(
        back_populates="post", cascade="all, delete-orphan", order_by="PostTag.tag_id"
    )
    tags: AssociationProxy[list[Tag]] = association_proxy(
        "tag_links", "tag", creator=lambda tag: PostTag(tag=tag)
    )


class Tag(TenantMixin, Base):
    __tablename__ = "tn_sec_recipe_tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class PostTag(SoftDeleteMixin, TenantMixin, Base):
    __tablename__ = "tn_sec_recipe_post_tags"
    post_id: Mapped[int] = mapped_column(ForeignKey("tn_sec_recipe_posts.id"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tn_sec_recipe_tags.id"), primary_key=True)
    post: Mapped[Post] = relationship(back_populates="tag_links")
    tag: Mapped[Tag] = relationship()


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata


@pytest.fixture(scope="module", autouse=True)
def tables(owner_engine: Engine) -> Iterator[None]:
    with owner_engine.begin() as conn:  # the owner's tables: only it may alter them
        drop_tenant_references(conn, Base.metadata)  # the seeded data crosses tenants on purpose
    yield


@pytest.fixture
def links(session: Session, sql: SQL) -> Session:
    """Post 1 of tenant 1 with tags 1 (live link) and 2 (soft-deleted link), plus a link row of
    tenant 2 pointing at the same post: the inconsistent data a secondary= would show (each row
    written by the app role under its own tenant)."""
    with sa_patterns.tenant_scope(1):
        sql("INSERT INTO tn_sec_recipe_posts (id, tenant_id, title) VALUES (1, 1, 'p')")
        sql("INSERT INTO tn_sec_recipe_tags (id, tenant_id, name) VALUES (1, 1, 'a'), (2, 1, 'b'), (4, 1, 'd')")
        sql("INSERT INTO tn_sec_recipe_post_tags (post_id, tag_id, tenant_id, deleted_at) VALUES "
            "(1, 1, 1, NULL), (1, 2, 1, now())")
    with sa_patterns.tenant_scope(2):
        sql("INSERT INTO tn_sec_recipe_tags (id, tenant_id, name) VALUES (3, 2, 'c')")
        sql("INSERT INTO tn_sec_recipe_post_tags (post_id, tag_id, tenant_id, deleted_at) VALUES (1, 3, 2, NULL)")
    return session


def _tags(session: Session) -> Callable[[], list[str]]:
    def names() -> list[str]:
        post = session.scalars(select(Post).where(Post.id == 1)).one()
        return [t.name for t in post.tags]

    return names


def test_the_association_object_recipe_is_filtered(links: Session, superuser_sql: SQL) -> None:
    names = _tags(links)
    with sa_patterns.tenant_scope(1):
        assert names() == ["a"]  # not the soft-deleted link, not tenant 2's
        post = links.get(Post, 1)
        assert post is not None
        post.tags.append(links.get(Tag, 4))
        links.flush()
    assert superuser_sql("SELECT tenant_id FROM tn_sec_recipe_post_tags WHERE tag_id = 4") == [(1,)]
    with sa_patterns.tenant_scope(1):
        links.expire_all()
        assert names() == ["a", "d"]
        link: Any = links.get(PostTag, (1, 1))
        links.delete(link)  # a soft delete of the link
        links.flush()
        links.expire_all()
        assert names() == ["d"]
    assert superuser_sql(
        "SELECT tag_id FROM tn_sec_recipe_post_tags WHERE deleted_at IS NOT NULL ORDER BY tag_id"
    ) == [(1,), (2,)]
