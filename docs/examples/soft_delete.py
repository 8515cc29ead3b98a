"""Soft delete a blog: hidden everywhere, cascaded with one operation id, restored exactly."""

from sqlalchemy import URL, ForeignKey, String, create_engine, delete, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

import sa_patterns
from sa_patterns import ConflictError, SoftDeleteMixin, soft_unique


class Base(DeclarativeBase):
    pass


class Blog(SoftDeleteMixin, Base):
    __tablename__ = "blogs"
    __table_args__ = (soft_unique("slug"),)  # unique among live rows only
    __soft_delete_guard__ = True  # a raw SQL DELETE becomes a soft delete too

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(50))
    posts: Mapped[list["Post"]] = relationship(cascade="all, delete", order_by="Post.id")


class Post(SoftDeleteMixin, Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    blog_id: Mapped[int] = mapped_column(ForeignKey("blogs.id"))
    title: Mapped[str] = mapped_column(String(100))


def main(url: URL) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)  # in an app: alembic --autogenerate
    Session = sa_patterns.install(sessionmaker(engine))

    with Session.begin() as s:
        s.add(Blog(slug="news", posts=[Post(title="a"), Post(title="b"), Post(title="c")]))

    # Post "c" is deleted on its own; later the whole blog is deleted by "alice".
    with Session.begin() as s:
        s.delete(s.scalars(select(Post).where(Post.title == "c")).one())
    with sa_patterns.actor_scope("alice"), Session.begin() as s:
        s.delete(s.scalars(select(Blog)).one())  # an UPDATE, cascaded to the live posts

    with Session() as s:
        assert s.scalars(select(Blog)).all() == []  # hidden from every ORM read
        assert s.get(Blog, 1) is None
        blog = s.scalars(select(Blog).execution_options(include_deleted=True)).one()
        assert blog.is_deleted and blog.deleted_by == "alice"
        assert [p.title for p in blog.posts] == ["a", "b", "c"]  # the option reaches loaders

    with engine.connect() as conn:  # the rows are all still there
        batches = conn.execute(text("SELECT title, delete_batch FROM posts ORDER BY id")).all()
        assert batches[0][1] == batches[1][1] != batches[2][1]  # "c" went separately

    # restore() revives what that one delete took down, and nothing deleted before it
    with Session.begin() as s:
        s.scalars(select(Blog).execution_options(include_deleted=True)).one().restore()
    with Session() as s:
        assert [p.title for p in s.scalars(select(Blog)).one().posts] == ["a", "b"]

    # a restore onto a slug a live row took meanwhile is refused, and changes nothing
    with Session.begin() as s:
        s.delete(s.scalars(select(Blog)).one())
    with Session.begin() as s:
        s.add(Blog(slug="news"))
    with Session() as s:
        old = s.scalars(
            select(Blog).where(Blog.is_deleted).execution_options(include_deleted=True)
        ).one()
        old.restore()
        try:
            s.commit()
            raise AssertionError("restore should have been refused")
        except ConflictError as error:
            assert error.columns == ("slug",)

    # bulk delete is one UPDATE; raw SQL DELETE is caught by the guard trigger
    with Session.begin() as s:
        s.execute(delete(Post).where(Post.title == "a"))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM blogs"))
        assert conn.execute(text("SELECT count(*) FROM blogs")).scalar() == 2

    # a real delete, when you mean it
    with Session.begin() as s:
        s.execute(delete(Post).execution_options(hard_delete=True))
        s.execute(delete(Blog).execution_options(hard_delete=True))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM blogs")).scalar() == 0
    with engine.begin() as conn:
        sa_patterns.drop_all(conn, Base.metadata)
    engine.dispose()
