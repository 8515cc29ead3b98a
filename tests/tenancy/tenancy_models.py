"""Models shared by the tenancy tests (imported, never collected). Row-level security is on
(the default); the admin policy names the configured admin role, the plugin's for the run."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sa_patterns import TenantMixin
from sa_patterns.tenancy import tenant_foreign_key, tenant_unique


class Base(DeclarativeBase):
    pass


class Tag(Base):
    """Not a tenant model: shared by everyone."""

    __tablename__ = "tn_tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str]


class Project(TenantMixin, Base):
    __tablename__ = "tn_projects"
    __rls__ = True
    __table_args__ = (tenant_unique("id"), tenant_unique("name"))

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    tasks: Mapped[list[Task]] = relationship(back_populates="project", order_by="Task.id")


class Task(TenantMixin, Base):
    __tablename__ = "tn_tasks"
    __rls__ = True
    __table_args__ = (tenant_foreign_key("project_id", "tn_projects.id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int]
    title: Mapped[str]
    tag_id: Mapped[int | None] = mapped_column(ForeignKey("tn_tags.id"), index=True)
    project: Mapped[Project] = relationship(back_populates="tasks")
    tag: Mapped[Tag | None] = relationship()


class UuidDoc(TenantMixin, Base):
    __tablename__ = "tn_uuid_docs"
    __tenant_type__ = Uuid
    __rls__ = True
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]


class StrDoc(TenantMixin, Base):
    __tablename__ = "tn_str_docs"
    __tenant_type__ = String(32)
    __rls__ = True
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]
