"""The tables and backfills the backfill tests (and the ``sa-patterns backfill`` subprocess) use.

``bf_items.filled`` is what the backfill computes (``val * 2``) and ``done`` counts how many times
a row was backfilled: exactly once is the proof of no double work. ``touched`` is the column the
concurrent writer updates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Integer, MetaData, Table, Text

from sa_patterns.backfill import Backfill

metadata = MetaData()

items = Table(
    "bf_items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("val", Integer, nullable=False),
    Column("filled", Integer),
    Column("done", Integer, nullable=False, server_default="0"),
    Column("touched", Integer, nullable=False, server_default="0"),
)

pairs = Table(
    "bf_pairs",
    metadata,
    Column("region", Integer, primary_key=True, autoincrement=False),
    Column("code", Text, primary_key=True),
    Column("done", Integer, nullable=False, server_default="0"),
)

FILL = Backfill(
    "bf_items_filled",
    items,
    values={"filled": items.c.val * 2, "done": items.c.done + 1},
    where=items.c.filled.is_(None),
)


def doubled(rows: Sequence[Any]) -> list[Mapping[str, Any]]:
    return [{"filled": row["val"] * 2, "done": row["done"] + 1} for row in rows]


#: The same work done in Python (as encryption needs): rows in, new values out.
FILL_IN_PYTHON = Backfill(
    "bf_items_python", items, rows=doubled, read=["val", "done"], where=items.c.filled.is_(None)
)


def make_pairs_fill() -> Backfill:
    """A callable the CLI accepts in place of a Backfill."""
    return Backfill("bf_pairs_done", pairs, values={"done": pairs.c.done + 1})
