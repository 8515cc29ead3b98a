"""The isolation matrix: every shape of the catalogue × every model kind it applies to × sync
and async × the tenant in scope and no tenant, judged by one oracle (see harness.py).

The cells run as a superuser connection, which row-level security does not bind: they prove
the ORM wall alone. A cell listed in ``catalogue.XFAIL`` is a strict xfail.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from .catalogue import SHAPES, XFAIL, XFAIL_ON, cells, matches, xfail_reason
from .harness import Cell, async_rolled_back, rolled_back, run_async, run_sync
from .models import KINDS


def _params(mode: str) -> list[Any]:
    """``pytest.param`` per cell of ``mode``, strict xfails marked from ``catalogue.XFAIL``."""
    params = []
    for cell in cells():
        if cell.mode != mode:
            continue
        reason = xfail_reason(cell)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(cell, marks=marks, id=cell.id))
    return params


@pytest.mark.parametrize("cell", _params("sync"))
def test_sync(
    cell: Cell, iso_db: str, iso_connection: Connection, iso_factory: sessionmaker[Session]
) -> None:
    with rolled_back(iso_connection):
        run_sync(cell, iso_factory, iso_connection, iso_db, strict=xfail_reason(cell) is None)


@pytest.mark.parametrize("cell", _params("async"))
async def test_async(
    cell: Cell,
    iso_db: str,
    iso_async_connection: AsyncConnection,
    iso_async_factory: async_sessionmaker[AsyncSession],
) -> None:
    async with async_rolled_back(iso_async_connection):
        await run_async(
            cell, iso_async_factory, iso_async_connection, iso_db,
            strict=xfail_reason(cell) is None,
        )


def test_catalogue_is_consistent() -> None:
    """Every shape applies to some kind, a kind in another declarative style takes exactly the
    cells of the kind it varies, and every XFAIL entry still names cells (a typo or a
    removed shape would otherwise leave an entry that silently marks nothing)."""
    for shape in SHAPES.values():
        assert any(shape.applies(k) for k in KINDS.values()), f"{shape.name} applies to no kind"
    all_cells = list(cells())
    for kind in KINDS.values():
        if kind.like is None:
            continue
        like = KINDS[kind.like]
        assert like.like is None, f"{kind.name} is a variant of {like.name}, itself a variant"
        assert (kind.tenant, kind.soft, kind.relational) == (like.tenant, like.soft, like.relational)
        ours = {(c.shape.name, c.mode, c.scope) for c in all_cells if c.kind is kind}
        theirs = {(c.shape.name, c.mode, c.scope) for c in all_cells if c.kind is like}
        assert ours == theirs, f"{kind.name} does not take the cells of {like.name}"
    entries = [*XFAIL.items()] + [item for _, _, more in XFAIL_ON for item in more.items()]
    for key, reason in entries:
        assert any(matches(key, c) for c in all_cells), (
            f"XFAIL entry {key} ({reason}) matches no cell"
        )
