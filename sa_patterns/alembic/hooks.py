"""``env.py`` hooks that compose with the user's own: include_object, render_item,
process_revision_directives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from alembic.operations.ops import MigrationScript
from alembic.util import PriorityDispatchResult
from sqlalchemy import Computed

from ..backfill import STATE_TABLE as BACKFILL_STATE_TABLE
from ..schema.registry import NOT_A_TABLE
from .online_plan import ConcurrentIndexes, plan_online
from .render import WIDTH, pieces

__all__ = [
    "compose_include_object",
    "compose_process_revision_directives",
    "compose_render_item",
    "ensure_imports",
]

_OURS = "_sa_patterns_render_item"


def compose_include_object(user: Callable[..., bool] | None) -> Callable[..., bool]:
    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        if user is not None and not user(obj, name, type_, reflected, compare_to):
            return False
        # Tables that only describe a view are created by their view entity, never as tables.
        info = getattr(obj, "info", None) or {}
        if type_ == "table" and info.get(NOT_A_TABLE):
            return False
        # The backfill engine's progress table is created when a backfill first runs (in a
        # migration, say) and no model declares it: never offered as a table to drop.
        if type_ == "table" and reflected and compare_to is None and name == BACKFILL_STATE_TABLE:
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
    if getattr(user, _OURS, False):
        return user  # type: ignore[return-value]  # already chained with ours

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
        if type_ == "server_default" and isinstance(obj, Computed):
            return _computed(obj, autogen_context)
        if type_ == "type" and autogen_context.opts.get("user_module_prefix") is None:
            # Alembic renders another library's type by its full module path (SQLModel's
            # str columns: sqlmodel.sql.sqltypes.AutoString()) but imports nothing for it
            module = type(obj).__module__
            if module.split(".")[0] not in {"sqlalchemy", "builtins", "__main__"}:
                autogen_context.imports.add(f"import {module}")
        return False

    setattr(render_item, _OURS, True)
    return render_item


def _computed(computed: Computed, autogen_context: Any) -> str | Literal[False]:
    """A long generation expression (a search vector's runs past 200 characters) as string
    pieces on lines of their own; a short one is left to Alembic."""
    sql = str(autogen_context.migration_context.impl.render_ddl_sql_expr(computed.sqltext))
    if len(sql) <= 60:
        return False
    prefix = autogen_context.opts.get("sqlalchemy_module_prefix", "sa.") or ""
    lines = "".join(f"\n        {part!r}" for part in pieces(sql, WIDTH - 20))
    persisted = "" if computed.persisted is None else f"\n        persisted={computed.persisted!r},"
    return f"{prefix}Computed({lines},{persisted}\n    )"


def ensure_imports(autogen_context: Any, upgrade_ops: Any, schemas: Any) -> PriorityDispatchResult:
    """Chain our ``render_item`` into this autogenerate run when ``configure()`` lacks it (an
    ``env.py`` whose other ``configure()`` call was edited): the script then imports
    ``sa_patterns`` for the toolkit's column types instead of failing with ``NameError`` at
    upgrade. The toolkit's own operations import what they use in any case."""
    opts = autogen_context.opts
    opts["render_item"] = compose_render_item(opts.get("render_item"))
    return PriorityDispatchResult.CONTINUE


def compose_process_revision_directives(
    user: Callable[..., None] | None, concurrent_indexes: ConcurrentIndexes = "toolkit",
) -> Callable[..., None]:
    def process_revision_directives(context: Any, revision: Any, directives: list[Any]) -> None:
        if user is not None:
            user(context, revision, directives)
        # what the revision does to tables that exist already runs online (see online_plan)
        for script in directives:
            if isinstance(script, MigrationScript):
                plan_online(context, script, concurrent_indexes)
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
