"""Tenancy: workspaces own boards; both are scoped to a tenant, with row-level security and a
composite foreign key so a board can never point at another tenant's workspace. Boards keep
their history (``Versioned``), which is scoped and secured like the boards themselves."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ...tenancy import TenantMixin, tenant_foreign_key, tenant_unique
from ...versioning import Versioned
from .base import Base


class TnWorkspace(TenantMixin, Base):
    __tablename__ = "tn_workspaces"
    __rls__ = True
    __table_args__ = (tenant_unique("id"), tenant_unique("name"))

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    boards: Mapped[list[TnBoard]] = relationship(back_populates="workspace", order_by="TnBoard.id")


class TnBoard(Versioned, TenantMixin, Base):
    __tablename__ = "tn_boards"
    __rls__ = True
    __table_args__ = (tenant_foreign_key("workspace_id", "tn_workspaces.id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int]
    title: Mapped[str] = mapped_column(String(100))
    workspace: Mapped[TnWorkspace] = relationship(back_populates="boards")
