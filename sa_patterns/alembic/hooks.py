"""``env.py`` hooks that compose with the user's own: include_object, render_item,
process_revision_directives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..schema.registry import NOT_A_TABLE

__all__ = [
    "compose_include_object",
    "compose_process_revision_directives",
    "compose_render_item",
]


def compose_include_object(user: Callable[..., bool] | None) -> Callable[..., bool]:
    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if user is not None and not user(obj, name, type_, reflected, compare_to):
            return False
        # Tables that only describe a view are created by their view entity, never as tables.
        info = getattr(obj, "info", None) or {}
        if type_ == "table" and info.get(NOT_A_TABLE):
            return False
        # The composite (tenant_id, column) keys are TenantReference objects, compared by the
        # toolkit's comparator, not foreign keys of the models' tables.
        if (
            type_ == "foreign_key_constraint" and reflected and compare_to is None
            and (name or "").endswith("_tenant_fkey")
            and [c.name for c in getattr(obj, "columns", ())][:1] == ["tenant_id"]
        ):
            return False
        if type_ == "index" and obj is not None:
            table = getattr(obj, "table", None)
            if table is not None and table.info.get(NOT_A_TABLE):
                return False
        return True

    return include_object


def compose_render_item(user: Callable[..., Any] | None) -> Callable[..., Any]:
    def render_item(type_: str, obj: Any, autogen_context: Any) -> Any:
        if user is not None:
            rendered = user(type_, obj, autogen_context)
            if rendered is not False:
                return rendered
        # Our column types render as sa_patterns.<Type>(...) through their __module__ and
        # __repr__; make sure the script imports the package they live in.
        if type_ == "type" and type(obj).__module__.startswith("sa_patterns"):
            autogen_context.imports.add("import sa_patterns")
            return f"sa_patterns.{obj!r}"
        return False

    return render_item


def compose_process_revision_directives(
    user: Callable[..., None] | None,
) -> Callable[..., None]:
    def process_revision_directives(context: Any, revision: Any, directives: list[Any]) -> None:
        if user is not None:
            user(context, revision, directives)
        # No empty revision files from --autogenerate when nothing changed (a plain
        # `alembic revision -m ...` still gets its empty file to fill by hand).
        # Only for the command line's `revision --autogenerate`: `alembic check` and programs
        # calling command.revision() read the (empty) script themselves.
        cmd_opts = getattr(getattr(context, "config", None), "cmd_opts", None)
        if (
            directives
            and getattr(cmd_opts, "autogenerate", False)
            and all(ops.is_empty() for ops in directives[0].upgrade_ops_list)
        ):
            directives[:] = []
            print(
                "  No changes: the database already matches the models (tables and the "
                "toolkit's objects), so no revision file was written."
            )

    return process_revision_directives
