"""Alembic operations for our database objects: ``create_entity``, ``drop_entity``,
``replace_entity``, each with its implementation, renderer and reverse.

Generated scripts call them as ``op.create_entity(sa_patterns.schema.Trigger(...))``: the
object's constructor call *is* the frozen definition, so the script imports only
``sa_patterns.schema`` and holds no secret.

An operation that repairs a drift of the live database (``repair``: what was wrong, rendered as a
comment above it) has nothing to undo: no revision ever declared the drifted state, so the
revision before wants the same objects, and its downgrade renders as a commented ``pass``
instead of re-opening the hole.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from sqlalchemy import DDL

from ..schema.constraints import TenantReference
from ..schema.objects import Entity
from .render import comment_lines, entity_call

__all__ = ["CreateEntityOp", "DropEntityOp", "RepairUndoOp", "ReplaceEntityOp"]


def _run(operations: Operations, statements: list[str]) -> None:
    for statement in statements:
        # DDL(): no bind-parameter parsing of ":"; DDL %-formats its text, so a literal "%"
        # (LIKE '%x%', plpgsql RAISE '%') is passed doubled.
        operations.execute(DDL(statement.replace("%", "%%")))  # type: ignore[no-untyped-call]


@Operations.register_operation("create_entity")
class CreateEntityOp(MigrateOperation):
    """Create a database object (function, trigger, policy, view, ...).

    ``not_valid``: a constraint on a table that has rows is added ``NOT VALID`` (no scan under
    its lock) and validated by ``op.validate_constraint()`` after the transaction."""

    def __init__(self, entity: Entity, *, repair: str | None = None, not_valid: bool = False) -> None:
        self.entity = entity
        self.repair = repair
        self.not_valid = not_valid

    @classmethod
    def create_entity(cls, operations: Operations, entity: Entity, *, not_valid: bool = False) -> None:
        operations.invoke(cls(entity, not_valid=not_valid))

    def reverse(self) -> DropEntityOp | RepairUndoOp:
        return RepairUndoOp(self.repair) if self.repair else DropEntityOp(self.entity)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("create_entity", self.entity.describe(), *_why(self.repair))


@Operations.register_operation("drop_entity")
class DropEntityOp(MigrateOperation):
    """Drop a database object; its full definition is kept so the downgrade can recreate it."""

    def __init__(self, entity: Entity, *, repair: str | None = None) -> None:
        self.entity = entity
        self.repair = repair

    @classmethod
    def drop_entity(cls, operations: Operations, entity: Entity) -> None:
        operations.invoke(cls(entity))

    def reverse(self) -> CreateEntityOp | RepairUndoOp:
        return RepairUndoOp(self.repair) if self.repair else CreateEntityOp(self.entity)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_entity", self.entity.describe(), *_why(self.repair))


@Operations.register_operation("replace_entity")
class ReplaceEntityOp(MigrateOperation):
    """Turn ``old`` into ``entity`` (same object, new definition)."""

    def __init__(self, entity: Entity, old: Entity, *, repair: str | None = None) -> None:
        self.entity = entity
        self.old = old
        self.repair = repair

    @classmethod
    def replace_entity(cls, operations: Operations, entity: Entity, old: Entity) -> None:
        operations.invoke(cls(entity, old))

    def reverse(self) -> ReplaceEntityOp | RepairUndoOp:
        return RepairUndoOp(self.repair) if self.repair else ReplaceEntityOp(self.old, self.entity)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("replace_entity", self.entity.describe(), *_why(self.repair))


class RepairUndoOp(MigrateOperation):
    """The downgrade of a drift repair: nothing to do (rendered as a commented ``pass``)."""

    def __init__(self, repair: str) -> None:
        self.repair = repair

    def reverse(self) -> RepairUndoOp:
        return self

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("repair_undo", self.repair)


def _why(repair: str | None) -> tuple[str, ...]:
    return (repair,) if repair else ()


@Operations.implementation_for(CreateEntityOp)
def _create(operations: Operations, operation: CreateEntityOp) -> None:
    statements = operation.entity.create_statements()
    if operation.not_valid:
        if not isinstance(operation.entity, TenantReference):
            raise TypeError(f"not_valid is for constraints, not {operation.entity.describe()}")
        statements = [statements[0] + " NOT VALID", *statements[1:]]
    _run(operations, statements)


@Operations.implementation_for(DropEntityOp)
def _drop(operations: Operations, operation: DropEntityOp) -> None:
    _run(operations, operation.entity.drop_sql())


@Operations.implementation_for(ReplaceEntityOp)
def _replace(operations: Operations, operation: ReplaceEntityOp) -> None:
    _run(operations, operation.entity.replace_statements(operation.old))


@Operations.implementation_for(RepairUndoOp)
def _nothing(operations: Operations, operation: RepairUndoOp) -> None:
    return None


def render_entity(autogen_context: AutogenContext, entity: Entity, indent: int = 0, lead: int = 0) -> str:
    """The constructor call for ``entity``, one argument per line (:mod:`.render`), importing
    the public module its class lives in (``sa_patterns.schema`` for the core kinds, a
    pattern's module for its own kinds)."""
    module = type(entity).__module__
    if module.startswith("sa_patterns.schema."):
        module = "sa_patterns.schema"
    autogen_context.imports.add(f"import {module}")
    return entity_call(entity, module, autogen_context.imports, indent, lead)


def _repaired(repair: str | None, call: str) -> list[str]:
    return [*comment_lines(repair, "sa_patterns repairs a drift: "), call] if repair else [call]


@renderers.dispatch_for(CreateEntityOp)
def _render_create(autogen_context: AutogenContext, op: CreateEntityOp) -> list[str]:
    call = render_entity(autogen_context, op.entity, lead=len("op.create_entity("))
    if op.not_valid:
        return _repaired(op.repair, f"op.create_entity({call}, not_valid=True)")
    return _repaired(op.repair, f"op.create_entity({call})")


@renderers.dispatch_for(DropEntityOp)
def _render_drop(autogen_context: AutogenContext, op: DropEntityOp) -> list[str]:
    call = render_entity(autogen_context, op.entity, lead=len("op.drop_entity("))
    return _repaired(op.repair, f"op.drop_entity({call})")


@renderers.dispatch_for(ReplaceEntityOp)
def _render_replace(autogen_context: AutogenContext, op: ReplaceEntityOp) -> list[str]:
    new = render_entity(autogen_context, op.entity, 4)
    old = render_entity(autogen_context, op.old, 4, lead=len("old="))
    return _repaired(op.repair, f"op.replace_entity(\n    {new},\n    old={old},\n)")


@renderers.dispatch_for(RepairUndoOp)
def _render_undo(autogen_context: AutogenContext, op: RepairUndoOp) -> list[str]:
    return ["pass  # nothing to undo, the upgrade repaired a drift:",
            *comment_lines(op.repair, "  ")]
