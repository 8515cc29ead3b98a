"""A new column of a populated table filled in short batches that commit, stopped half way and
resumed; a finished backfill run again touches nothing."""

from sqlalchemy import URL, ForeignKey, create_engine, func, insert, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns.backfill import Backfill, Progress, backfill_status, run_backfill


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int]


class Task(Base):
    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    title: Mapped[str]
    tenant_id: Mapped[int | None]  # new: existing rows take it from their project


# Where each row's value comes from: here a join (a scalar subquery per row); a constant or
# another column work the same way. `where` names the rows still to do, so a rerun is idempotent.
FILL_TASK_TENANT = Backfill(
    "tasks.tenant_id",
    Task,
    values={"tenant_id": select(Project.tenant_id).where(Project.id == Task.project_id).scalar_subquery()},
    where=Task.tenant_id.is_(None),
)


def main(url: URL) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(Project), [{"id": p, "tenant_id": 100 + p % 3} for p in range(1, 21)])
        conn.execute(insert(Task), [{"project_id": 1 + t % 20, "title": f"task {t}"} for t in range(5_000)])

    # A run stopped after 3 batches (a deploy, Ctrl-C, a killed process: the same outcome).
    first = run_backfill(engine, FILL_TASK_TENANT, batch_size=500, max_batches=3)
    assert first.rows == 1_500 and not first.finished
    state = backfill_status(engine, "tasks.tenant_id")
    assert state is not None and state.rows_done == 1_500 and state.finished_at is None

    # The next run resumes after the last committed batch.
    seen: list[Progress] = []
    rest = run_backfill(engine, FILL_TASK_TENANT, batch_size=500, progress=seen.append)
    assert rest.finished and rest.rows == 3_500 and rest.rows_total == 5_000
    assert seen[-1].rows_done == seen[-1].estimate == 5_000

    with engine.connect() as conn:
        wrong = conn.execute(
            select(func.count()).select_from(Task).join(Project, Project.id == Task.project_id)
            .where(Task.tenant_id.is_distinct_from(Project.tenant_id))
        ).scalar_one()
    assert wrong == 0

    # Finished: running it again is a no-op.
    assert run_backfill(engine, FILL_TASK_TENANT).already_finished
    engine.dispose()
