"""``package.module:attr`` specs, as the CLI and ``env.py`` take them: one loader for all."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from sqlalchemy import MetaData

from .errors import ConfigurationError

__all__ = ["load_metadata", "load_object"]


def load_object(
    spec: str, *, what: str = "object", kind: str = "attribute", default_attr: str | None = None
) -> Any:
    """Import ``package.module:attr`` (dotted attributes allowed) with the current directory
    importable, as a user running the CLI from the project root expects."""
    module_name, _, attr = spec.partition(":")
    attr = attr or (default_attr or "")
    if not module_name or not attr:
        raise ConfigurationError(f"{what} {spec!r} must look like package.module:{kind}.")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"{what} {spec!r}: cannot import {module_name!r} ({exc}); run from your project root.") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigurationError(f"{what} {spec!r}: {module_name} has no {kind} {attr!r}.")
        obj = getattr(obj, part)
    return obj


def load_metadata(spec: str) -> MetaData:
    """The ``MetaData`` named by ``spec``: a MetaData or a declarative base (``:metadata``
    when no attribute is given)."""
    obj = load_object(spec, what="models", default_attr="metadata")
    metadata = obj if isinstance(obj, MetaData) else getattr(obj, "metadata", None)
    if not isinstance(metadata, MetaData):
        raise ConfigurationError(f"models {spec!r} is neither a MetaData nor a declarative base.")
    return metadata
