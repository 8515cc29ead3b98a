"""Versioned added to a populated table: the history table and its triggers in the revision's
transaction (brief locks), then version 1 for every older row in batches that commit; autogenerate
then finds nothing to add."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import URL, create_engine, insert, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic  # registers op.backfill_versions
from sa_patterns import Versioned
from sa_patterns.versioning import history_objects, history_table


class Before(DeclarativeBase):  # the table as production has it
    pass


class OldTask(Before):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


class Base(DeclarativeBase):  # the model, now versioned
    pass


class Task(Versioned, Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]


def main(url: URL) -> None:
    engine = create_engine(url)
    Before.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(OldTask), [{"title": f"task {t}"} for t in range(5_000)])

    # The revision's upgrade(), as Alembic runs it. Autogenerate writes the history table, its
    # function and triggers (what this block does), then op.backfill_versions("tasks"):
    with engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        history = history_table(Task)
        history.create(conn)
        for entity in history_objects(Task.__table__, history):
            op.create_entity(entity)
    with engine.connect() as conn:
        Operations(MigrationContext.configure(conn)).backfill_versions("tasks", batch_size=500)

    with engine.connect() as conn:
        missing = conn.execute(text(
            "SELECT count(*) FROM tasks t WHERE NOT EXISTS "
            "(SELECT FROM tasks_history h WHERE h.id = t.id AND h.version = 1 AND h.valid_to IS NULL)"
        )).scalar_one()
        assert missing == 0
        # a write from now on opens version 2 (the triggers have been in force since their commit)
        conn.execute(text("UPDATE tasks SET title = 'renamed' WHERE id = 1"))
        assert conn.execute(text("SELECT max(version) FROM tasks_history WHERE id = 1")).scalar_one() == 2
        # the backfill's record is forgotten, and autogenerate has nothing to add
        assert conn.execute(text("SELECT to_regclass('sa_patterns_backfill')")).scalar() is None
        context = MigrationContext.configure(conn, opts={
            **sa_patterns.alembic.configure_kwargs(), "target_metadata": Base.metadata})
        assert compare_metadata(context, Base.metadata) == []
        conn.rollback()
    engine.dispose()
