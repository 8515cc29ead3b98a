"""Many-to-many links between tenant models, kept soft-deletable: an association object (a model
of its own, which the tenant and soft-delete filters cover) and an association proxy for the
collection. ``relationship(secondary=...)`` through such a table is refused: SQLAlchemy's
criteria never reach a secondary table."""

from sqlalchemy import URL, ForeignKey, create_engine, select
from sqlalchemy.ext.associationproxy import AssociationProxy, association_proxy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

import sa_patterns
from sa_patterns import ConfigurationError, SoftDeleteMixin, TenantMixin


class Base(DeclarativeBase):
    pass


class Article(TenantMixin, Base):
    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    # the links, filtered by tenant and soft delete like any relationship to a model...
    tag_links: Mapped[list["ArticleTag"]] = relationship(
        back_populates="article", cascade="all", order_by="ArticleTag.tag_id"
    )
    # ...and the collection of tags through them: reading, appending (the creator builds the
    # link; the flush fills its tenant_id) and iterating all go through tag_links
    tags: AssociationProxy[list["Tag"]] = association_proxy(
        "tag_links", "tag", creator=lambda tag: ArticleTag(tag=tag)
    )


class Tag(TenantMixin, Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class ArticleTag(SoftDeleteMixin, TenantMixin, Base):
    """The association object: two many-to-one relationships, its own tenant_id and deleted_at."""

    __tablename__ = "article_tags"
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id"), primary_key=True)
    article: Mapped[Article] = relationship(back_populates="tag_links")
    tag: Mapped[Tag] = relationship()


def the_shortcut_is_refused() -> None:
    """``secondary=`` through a tenant (or soft-delete) table fails at mapper configuration."""

    class Other(DeclarativeBase):
        pass

    class Post(TenantMixin, Other):
        __tablename__ = "posts"
        id: Mapped[int] = mapped_column(primary_key=True)
        labels: Mapped[list["Label"]] = relationship(secondary="post_labels")

    class Label(TenantMixin, Other):
        __tablename__ = "labels"
        id: Mapped[int] = mapped_column(primary_key=True)

    class PostLabel(TenantMixin, Other):
        __tablename__ = "post_labels"
        post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"), primary_key=True)
        label_id: Mapped[int] = mapped_column(ForeignKey("labels.id"), primary_key=True)

    try:
        Other.registry.configure()
        raise AssertionError("unreachable")
    except ConfigurationError as error:
        assert "Post.labels" in str(error) and "association object" in str(error)
    finally:
        Other.registry.dispose()


def main(url: URL) -> None:
    the_shortcut_is_refused()
    engine = create_engine(url)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)  # applications: alembic --autogenerate
    Session = sa_patterns.install(sessionmaker(engine))

    with sa_patterns.tenant_scope(1), Session.begin() as s:
        python, sql = Tag(name="python"), Tag(name="sql")
        s.add(Article(id=1, title="Hello", tags=[python, sql]))  # two links, tenant_id filled
    with sa_patterns.tenant_scope(2), Session.begin() as s:
        s.add(Tag(name="other tenant's tag"))

    with sa_patterns.tenant_scope(1), Session.begin() as s:
        article = s.get(Article, 1)
        assert article is not None
        assert [t.name for t in article.tags] == ["python", "sql"]
        s.delete(article.tag_links[0])  # unlink: a soft delete of the link row

    with sa_patterns.tenant_scope(1), Session() as s:
        article = s.scalars(select(Article)).one()
        assert [t.name for t in article.tags] == ["sql"]  # the soft-deleted link is hidden
        deleted = s.scalars(select(ArticleTag).execution_options(include_deleted=True)).all()
        assert len(deleted) == 2  # ... and kept, restorable
    engine.dispose()
