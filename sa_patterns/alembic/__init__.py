"""Alembic integration: ``import sa_patterns.alembic`` in ``env.py``, then
``context.configure(..., **sa_patterns.alembic.configure_kwargs())``.

Importing this package registers the ``create_entity``/``drop_entity``/``replace_entity``
operations and the ``sa_patterns`` autogenerate plugin, once. It is the toolkit's only
registration side effect, and only ``env.py`` triggers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic.runtime.plugins import Plugin

from . import compare, hooks, schedule  # noqa: F401  (schedule registers its ops on import)
from .ops import CreateEntityOp, DropEntityOp, ReplaceEntityOp

__all__ = ["CreateEntityOp", "DropEntityOp", "ReplaceEntityOp", "configure_kwargs"]

PLUGIN_NAME = "sa_patterns"

def _setup_once() -> None:
    from alembic.runtime import plugins

    if PLUGIN_NAME not in plugins._all_plugins:
        Plugin.setup_plugin_from_module(compare, PLUGIN_NAME)


_setup_once()


def configure_kwargs(
    *,
    include_object: Callable[..., bool] | None = None,
    render_item: Callable[..., Any] | None = None,
    process_revision_directives: Callable[..., None] | None = None,
    autogenerate_plugins: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``context.configure()`` that wire the toolkit in.

    Pass your own ``include_object``, ``render_item`` or ``process_revision_directives`` here
    and they are composed with ours (yours decides first) instead of being replaced.
    """
    plugins = list(autogenerate_plugins or ["alembic.autogenerate.*"])
    if PLUGIN_NAME not in plugins:
        plugins.append(PLUGIN_NAME)
    return {
        "autogenerate_plugins": plugins,
        "include_object": hooks.compose_include_object(include_object),
        "render_item": hooks.compose_render_item(render_item),
        "process_revision_directives": hooks.compose_process_revision_directives(
            process_revision_directives
        ),
        "compare_type": True,
        "compare_server_default": True,
        **extra,
    }
