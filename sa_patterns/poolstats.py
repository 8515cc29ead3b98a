"""Pool health as numbers: what a pool holds now and what happened to it since monitoring began.

``pool_stats(engine)`` reads the pool's own gauges; ``monitor_pool(engine)`` adds counters from
pool events (connects, checkouts, checkins, invalidations such as a server-killed connection),
cheap enough for production and removable.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

__all__ = ["PoolMonitor", "PoolStats", "monitor_pool", "pool_stats"]


@dataclass(frozen=True)
class PoolStats:
    """Gauges of a pool (``None`` where the pool class has no such notion, e.g. NullPool)."""

    pool_class: str
    size: int | None
    checked_out: int | None
    checked_in: int | None
    overflow: int | None


def _sync(engine: Engine | AsyncEngine) -> Engine:
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


def pool_stats(engine: Engine | AsyncEngine) -> PoolStats:
    pool = _sync(engine).pool
    if isinstance(pool, QueuePool):
        return PoolStats(type(pool).__name__, pool.size(), pool.checkedout(), pool.checkedin(), pool.overflow())
    return PoolStats(type(pool).__name__, None, None, None, None)


class PoolMonitor:
    """Counters fed by pool events; :meth:`snapshot` reads them, :meth:`remove` detaches."""

    def __init__(self, engine: Engine | AsyncEngine) -> None:
        self.engine = _sync(engine)
        self._lock = threading.Lock()
        self.connects = 0
        self.checkouts = 0
        self.checkins = 0
        self.invalidations = 0
        self._listeners = [
            ("connect", self._on_connect),
            ("checkout", self._on_checkout),
            ("checkin", self._on_checkin),
            ("invalidate", self._on_invalidate),
            ("soft_invalidate", self._on_invalidate),
        ]
        for name, fn in self._listeners:
            event.listen(self.engine.pool, name, fn)

    def _on_connect(self, *args: Any) -> None:
        with self._lock:
            self.connects += 1

    def _on_checkout(self, *args: Any) -> None:
        with self._lock:
            self.checkouts += 1

    def _on_checkin(self, *args: Any) -> None:
        with self._lock:
            self.checkins += 1

    def _on_invalidate(self, *args: Any) -> None:
        with self._lock:
            self.invalidations += 1

    def snapshot(self) -> dict[str, Any]:
        gauges = pool_stats(self.engine)
        with self._lock:
            return {
                **gauges.__dict__,
                "connects": self.connects,
                "checkouts": self.checkouts,
                "checkins": self.checkins,
                "invalidations": self.invalidations,
            }

    def remove(self) -> None:
        for name, fn in self._listeners:
            event.remove(self.engine.pool, name, fn)


def monitor_pool(engine: Engine | AsyncEngine) -> PoolMonitor:
    """Start counting pool events on ``engine`` (call ``.remove()`` to stop)."""
    return PoolMonitor(engine)
