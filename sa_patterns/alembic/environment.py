"""Helpers for ``env.py``: where the models and the database are."""

from __future__ import annotations

import os

from alembic.config import Config
from sqlalchemy import URL, MetaData

from .._spec import load_metadata
from ..database import normalise_url
from ..errors import ConfigurationError

__all__ = ["database_url", "target_metadata"]


def target_metadata(config: Config) -> MetaData | None:
    """The ``MetaData`` named by ``sa_patterns.metadata = package.module:attr`` in the ini
    (a ``MetaData`` or a declarative base), or one handed over in ``config.attributes``."""
    given = config.attributes.get("target_metadata")
    if given is not None:
        return given  # type: ignore[no-any-return]
    spec = config.get_main_option("sa_patterns.metadata")
    return load_metadata(spec) if spec else None


def database_url(config: Config) -> URL:
    """``sqlalchemy.url`` from the ini, else ``DATABASE_URL`` (secrets stay out of files)."""
    raw = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL", "")
    if not raw:
        raise ConfigurationError(
            "No database: set DATABASE_URL or sqlalchemy.url in alembic.ini."
        )
    return normalise_url(raw)
