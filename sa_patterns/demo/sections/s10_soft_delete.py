"""Soft delete: deleted rows stay in the table, every ORM read hides them, restore is exact."""

from __future__ import annotations

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import selectinload

import sa_patterns

from ..models.soft_delete import SdProject, SdTask
from ..runner import DemoContext

TITLE = "Soft delete: hidden everywhere, cascaded with one operation id, restored exactly"


def run(ctx: DemoContext) -> None:
    with ctx.Session.begin() as s:
        s.add(SdProject(slug="apollo", tasks=[SdTask(title=t) for t in ("plan", "build", "ship")]))
        s.add(SdProject(slug="gemini", tasks=[SdTask(title="orbit")]))

    # one task is deleted on its own first; then the whole project goes
    with ctx.Session.begin() as s:
        s.delete(s.scalars(select(SdTask).where(SdTask.title == "ship")).one())
    with sa_patterns.actor_scope("alice"), ctx.Session.begin() as s:
        apollo = s.scalars(select(SdProject).where(SdProject.slug == "apollo")).one()
        s.delete(apollo)
    with ctx.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT t.title, t.deleted_at IS NOT NULL, t.delete_batch = p.delete_batch "
            "FROM sd_tasks t JOIN sd_projects p ON p.id = t.project_id "
            "WHERE p.slug = 'apollo' ORDER BY t.id")).all()
        by = conn.execute(text("SELECT deleted_by FROM sd_projects WHERE slug = 'apollo'")).scalar()
    ctx.show("apollo's tasks in the table (title, deleted, same operation)", [tuple(r) for r in rows])
    ctx.check(len(rows) == 3 and all(r[1] for r in rows), "session.delete() kept every row (UPDATE)")
    ctx.check([r[2] for r in rows] == [True, True, False], "the cascade shares one delete_batch")
    ctx.check(by == "alice", "deleted_by is the actor in scope")

    with ctx.Session() as s:
        live = s.scalars(select(SdProject.slug)).all()
        n = s.scalar(select(func.count()).select_from(SdTask))
        joined = s.execute(
            select(SdProject.slug, SdTask.title).outerjoin(SdProject.tasks).order_by(SdTask.id)
        ).all()
        everything = s.scalars(select(SdProject.slug).execution_options(include_deleted=True)).all()
    ctx.show("select(SdProject)", live)
    ctx.show("count(SdTask)", n)
    ctx.show("outerjoin(SdProject.tasks)", [tuple(r) for r in joined])
    ctx.show("with include_deleted=True", sorted(everything))
    ctx.check(live == ["gemini"] and n == 1, "top-level selects and count() hide deleted rows")
    ctx.check(sorted(everything) == ["apollo", "gemini"], "include_deleted=True sees them")

    # restore revives exactly what that delete took down
    with ctx.Session.begin() as s:
        stmt = select(SdProject).where(SdProject.slug == "apollo")
        s.scalars(stmt.execution_options(include_deleted=True)).one().restore()
    with ctx.Session() as s:
        apollo = s.scalars(
            select(SdProject).where(SdProject.slug == "apollo").options(selectinload(SdProject.tasks))
        ).one()
        titles = [t.title for t in apollo.tasks]
    ctx.show("after restore(): apollo's live tasks", titles)
    ctx.check(titles == ["plan", "build"], "restore() revived its operation, not the earlier delete")

    # a live row takes the slug; restoring the old one is refused, nothing changes
    with ctx.Session.begin() as s:
        s.delete(s.scalars(select(SdProject).where(SdProject.slug == "gemini")).one())
    with ctx.Session.begin() as s:
        s.add(SdProject(slug="gemini"))
    with ctx.Session() as s:
        old = s.scalars(
            select(SdProject).where(SdProject.slug == "gemini", SdProject.is_deleted)
            .execution_options(include_deleted=True)
        ).one()
        old.restore()
        try:
            s.commit()
            error = "no error"
        except sa_patterns.ConflictError as exc:
            error = str(exc)
            s.rollback()
    ctx.show("restore() onto a taken slug", error)
    ctx.check("sd_projects(slug)" in error, "ConflictError names the unique columns")

    # bulk delete is one UPDATE; a raw SQL DELETE is caught by the guard trigger
    with ctx.Session.begin() as s:
        result = s.execute(delete(SdTask).where(SdTask.title == "plan"))
        ctx.show("delete(SdTask).where(title == 'plan') rowcount", result.rowcount)  # type: ignore[attr-defined]
    with ctx.engine.begin() as conn:
        conn.execute(text("DELETE FROM sd_projects WHERE slug = 'apollo'"))
        kept = conn.execute(text(
            "SELECT deleted_at IS NOT NULL FROM sd_projects WHERE slug = 'apollo'")).scalar()
    ctx.show("raw DELETE FROM sd_projects WHERE slug = 'apollo' → row still there, deleted", kept)
    ctx.check(kept is True, "the guard trigger turned a raw DELETE into a soft delete")
    with ctx.Session.begin() as s:
        sa_patterns.hard_delete(
            s, s.scalars(select(SdProject).where(SdProject.slug == "apollo")
                         .execution_options(include_deleted=True)).one())
    with ctx.engine.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM sd_projects WHERE slug = 'apollo'")).scalar()
    ctx.check(left == 0, "sa_patterns.hard_delete() really deletes (and passes the guard)")
