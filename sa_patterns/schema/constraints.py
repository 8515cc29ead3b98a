"""Constraints SQLAlchemy's table must not hold: the composite ``(tenant_id, column)`` foreign key
of :mod:`sa_patterns.tenancy.references`, kept out of the ``Table`` so relationships do not join
over it. Stamped with a comment and compared like the other objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .objects import Entity, qualified, quote

__all__ = ["TenantReference"]


@dataclass(frozen=True)
class TenantReference(Entity):
    """``FOREIGN KEY (tenant_id, <column>) REFERENCES <parent> (tenant_id, <refcolumn>)``."""

    schema: str | None
    table: str
    name: str
    column: str
    ref_schema: str | None
    ref_table: str
    ref_column: str
    on_delete: str = ""
    on_update: str = ""

    kind: ClassVar[str] = "tenant_reference"
    order: ClassVar[int] = 5  # after the tables, before triggers and policies

    def key(self) -> tuple[str, ...]:
        return (self.kind, self.schema or "", self.table, self.name)

    def comment_target(self) -> str:
        return f"CONSTRAINT {quote(self.name)} ON {qualified(self.schema, self.table)}"

    def create_sql(self) -> list[str]:
        actions = "".join(
            f" ON {verb} {action}"
            for verb, action in (("DELETE", self.on_delete), ("UPDATE", self.on_update))
            if action
        )
        return [
            f"ALTER TABLE {qualified(self.schema, self.table)} ADD CONSTRAINT {quote(self.name)} "
            f"FOREIGN KEY (tenant_id, {quote(self.column)}) REFERENCES "
            f"{qualified(self.ref_schema, self.ref_table)} (tenant_id, {quote(self.ref_column)})"
            f"{actions}"
        ]

    def drop_sql(self) -> list[str]:
        return [
            f"ALTER TABLE IF EXISTS {qualified(self.schema, self.table)} "
            f"DROP CONSTRAINT IF EXISTS {quote(self.name)}"
        ]
