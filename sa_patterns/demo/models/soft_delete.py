"""Soft delete: projects own tasks (delete cascade), unique slugs among live projects, and a
guard trigger that turns a raw SQL DELETE into the soft delete."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ...soft_delete import SoftDeleteMixin, soft_unique
from .base import Base


class SdProject(SoftDeleteMixin, Base):
    __tablename__ = "sd_projects"
    __table_args__ = (soft_unique("slug"),)
    __soft_delete_guard__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(50))
    tasks: Mapped[list[SdTask]] = relationship(
        back_populates="project", cascade="all, delete", order_by="SdTask.id"
    )


class SdTask(SoftDeleteMixin, Base):
    __tablename__ = "sd_tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("sd_projects.id"), index=True)
    title: Mapped[str] = mapped_column(String(100))
    project: Mapped[SdProject] = relationship(back_populates="tasks")
