"""Alembic integration: ``import sa_patterns.alembic`` in ``env.py``, then
``context.configure(..., **sa_patterns.alembic.configure_kwargs())`` in **both** of its
``configure()`` calls (offline and online).

Importing this package registers the ``create_entity``/``drop_entity``/``replace_entity``
operations, the ``sa_patterns`` autogenerate plugin, and one global comparator that makes a
script import the toolkit's column types even where ``configure()`` lacks our ``render_item``.
It is the toolkit's only registration side effect, and only ``env.py`` triggers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority

# the adopt_* modules and schedule register their ops on import
from . import (  # noqa: F401
    adopt_encryption,
    adopt_history,
    adopt_ops,
    adopt_partition,
    adopt_search,
    compare,
    hooks,
    schedule,
)
from .online import DuplicateKeysError, LockTimeoutError, run_migrations
from .online_plan import ConcurrentIndexes
from .ops import CreateEntityOp, DropEntityOp, ReplaceEntityOp

__all__ = [
    "CreateEntityOp",
    "DropEntityOp",
    "DuplicateKeysError",
    "LockTimeoutError",
    "ReplaceEntityOp",
    "configure_kwargs",
    "run_migrations",
]

PLUGIN_NAME = "sa_patterns"

def _lint_written_revision(path: str, options: Any) -> None:
    """The ``sa_patterns_lint`` post-write hook; the linter is imported only when it runs."""
    from ..lint.hook import lint_written_revision

    lint_written_revision(path, options)


def _setup_once() -> None:
    from alembic.autogenerate import comparators
    from alembic.runtime import plugins
    from alembic.script import write_hooks

    if PLUGIN_NAME not in plugins._all_plugins:
        # alembic.ini's `type = sa_patterns_lint` works once env.py imports this package
        write_hooks.register("sa_patterns_lint")(_lint_written_revision)
        Plugin.setup_plugin_from_module(compare, PLUGIN_NAME)
        # global, not in the plugin: it must run whatever autogenerate_plugins the env names
        comparators.dispatch_for("schema", priority=DispatchPriority.FIRST)(hooks.ensure_imports)


_setup_once()


def configure_kwargs(
    *,
    include_object: Callable[..., bool] | None = None,
    render_item: Callable[..., Any] | None = None,
    process_revision_directives: Callable[..., None] | None = None,
    autogenerate_plugins: list[str] | None = None,
    concurrent_indexes: ConcurrentIndexes = "toolkit",
    **extra: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``context.configure()`` that wire the toolkit in: its hooks and
    its autogenerate plugin, nothing else.

    No option you may pass yourself comes back (``compare_type`` is on by Alembic's default,
    ``compare_server_default`` is yours to choose), so
    ``context.configure(connection=conn, compare_type=True, **configure_kwargs())`` cannot
    clash. Your own ``include_object``, ``render_item`` or ``process_revision_directives``
    given here are chained with ours (yours decides first), your ``autogenerate_plugins`` get
    ours added, and any other ``configure()`` argument given here is passed through, so
    ``context.configure(**configure_kwargs(connection=conn, compare_type=True, ...))`` works
    too.

    ``concurrent_indexes``: which indexes autogenerate builds ``CONCURRENTLY`` when their table
    exists already: the toolkit's (``"toolkit"``, the default), yours too (``"all"``), or none.
    """
    plugins = list(autogenerate_plugins or ["alembic.autogenerate.*"])
    if PLUGIN_NAME not in plugins:
        plugins.append(PLUGIN_NAME)
    return {
        **extra,
        "autogenerate_plugins": plugins,
        "include_object": hooks.compose_include_object(include_object),
        "render_item": hooks.compose_render_item(render_item),
        "process_revision_directives": hooks.compose_process_revision_directives(
            process_revision_directives, concurrent_indexes
        ),
    }
