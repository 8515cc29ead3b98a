"""Re-encrypt a table with the active key and rebuild its blind indexes, batch by batch.

Each batch is one transaction: select up to ``batch_size`` rows that still need work (a value
not sealed by the active key, or a blind index not made with the active index key) in primary
key order ``FOR UPDATE``, re-seal them in Python, update them, commit. So:

* **crash-safe**: a batch is committed whole or not at all, and an unfinished row still holds
  its old ciphertext, readable as long as the old key stays in the keyring;
* **resumable**: the work predicate is computed from the stored bytes (the envelope header
  carries the key id), so a second run only touches what the first did not finish;
* **online**: rows are locked only for the duration of their batch; the application keeps
  reading (any key) and writing (active key) meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    LargeBinary,
    Table,
    and_,
    bindparam,
    column,
    false,
    func,
    literal,
    or_,
    select,
    table,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ColumnElement, coercions, roles, visitors

from ..errors import ConfigurationError, DecryptionError
from .keyring import Keyring
from .types import EncryptedType
from .verify import encrypted_columns

__all__ = ["RotationReport", "rotate_keys", "rotate_keys_async"]


@dataclass
class RotationReport:
    """What a rotation run did. ``remaining`` is 0 when the table is fully on the active keys."""

    table: str
    columns: tuple[str, ...]
    to_do: int = 0
    rows: int = 0
    reencrypted: int = 0
    reindexed: int = 0
    batches: int = 0
    remaining: int = 0
    seconds: float = 0.0
    active_key: str = ""
    active_index_key: str | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class _Col:
    name: str
    type_: EncryptedType[Any]
    ring: Keyring
    raw: ColumnElement[Any]
    bidx: ColumnElement[Any] | None
    bidx_name: str | None

    def needs_seal(self) -> ColumnElement[bool]:
        prefix = self.ring.header(self.ring.active)
        return and_(
            self.raw.is_not(None),
            func.substring(self.raw, 1, len(prefix)) != literal(prefix, LargeBinary()),
        )

    def needs_index(self) -> ColumnElement[bool]:
        if self.bidx is None or self.ring.active_index is None:
            return false()
        prefix = self.ring.active_index.encode("ascii") + b":"
        return or_(
            and_(
                self.raw.is_not(None),
                or_(
                    self.bidx.is_(None),
                    func.substring(self.bidx, 1, len(prefix)) != literal(prefix, LargeBinary()),
                ),
            ),
            and_(self.raw.is_(None), self.bidx.is_not(None)),
        )


class _Plan:
    def __init__(self, model: Any, names: Sequence[str] | None, where: Any) -> None:
        found = list(encrypted_columns(model))
        if not found:
            raise ConfigurationError(f"{model!r} has no encrypted columns to rotate.")
        source: Table = found[0][0]
        if names:
            unknown = set(names) - {c.name for _, c, _ in found}
            if unknown:
                raise ConfigurationError(
                    f"{source.name} has no encrypted column(s) {sorted(unknown)}; it has "
                    f"{[c.name for _, c, _ in found]}."
                )
            found = [f for f in found if f[1].name in names]
        self.source = source
        pks: list[Column[Any]] = list(source.primary_key.columns)
        if not pks:
            raise ConfigurationError(f"{source.name} has no primary key: rotation pages by it.")
        # A lightweight copy of the table whose encrypted columns are plain bytea: rotation
        # moves envelopes and never sends plaintext to SQL.
        raw_columns = [
            column(c.name, LargeBinary() if isinstance(c.type, (EncryptedType, LargeBinary)) else c.type)
            for c in source.columns
        ]
        cols: list[_Col] = []
        self.raw = table(source.name, *raw_columns, schema=source.schema)
        for _, col, type_ in found:
            bidx_name = type_.blind_index_name if type_.blind_index else None
            cols.append(
                _Col(
                    col.name,
                    type_,
                    type_.resolve_keyring(),
                    self.raw.c[col.name],
                    self.raw.c[bidx_name] if bidx_name else None,
                    bidx_name,
                )
            )
        self.cols = cols
        self.pk = [self.raw.c[pk.name] for pk in pks]
        self.where = None if where is None else self._adapt(where)

    def _adapt(self, clause: Any) -> ColumnElement[bool]:
        """``where`` is written against the model; point its columns at the bytea copy."""

        def replace(element: Any, **kw: Any) -> Any:
            if isinstance(element, Column) and element.table is self.source:
                return self.raw.c[element.name]
            return None

        expr: ColumnElement[bool] = coercions.expect(roles.WhereHavingRole, clause)
        return visitors.replacement_traverse(expr, {}, replace)

    def work(self) -> ColumnElement[bool]:
        preds = [c.needs_seal() for c in self.cols] + [c.needs_index() for c in self.cols]
        clause = or_(*preds)
        if self.where is not None:
            clause = and_(clause, self.where)
        return clause

    def count(self, conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(self.raw).where(self.work())).scalar_one())

    def batch(
        self, conn: Connection, after: tuple[Any, ...] | None, size: int, report: RotationReport
    ) -> tuple[Any, ...] | None:
        stmt = select(*self.pk, *[c.raw for c in self.cols])
        stmt = stmt.add_columns(*[c.bidx for c in self.cols if c.bidx is not None])
        stmt = stmt.where(self.work())
        if after is not None:
            stmt = stmt.where(tuple_(*self.pk) > tuple_(*after))
        stmt = stmt.order_by(*self.pk).limit(size).with_for_update()
        rows = conn.execute(stmt).mappings().all()
        if not rows:
            return None
        params = []
        for row in rows:
            values: dict[str, Any] = {f"_pk{i}": row[pk.name] for i, pk in enumerate(self.pk)}
            for c in self.cols:
                values[c.name], values[c.bidx_name or ""] = self._rotate(c, row, report)
            values.pop("", None)
            params.append(values)
        targets = {c.name: bindparam(c.name, type_=LargeBinary()) for c in self.cols}
        for c in self.cols:
            if c.bidx_name:
                targets[c.bidx_name] = bindparam(c.bidx_name, type_=LargeBinary())
        conn.execute(
            update(self.raw)
            .where(and_(*[pk == bindparam(f"_pk{i}") for i, pk in enumerate(self.pk)]))
            .values(targets),
            params,
        )
        report.rows += len(rows)
        report.batches += 1
        return tuple(rows[-1][pk.name] for pk in self.pk)

    def _rotate(self, c: _Col, row: Any, report: RotationReport) -> tuple[bytes | None, bytes | None]:
        stored = row[c.name]
        old_index = row[c.bidx_name] if c.bidx_name else None
        if stored is None:
            return None, None
        stored = bytes(stored)
        ring = c.ring
        header = ring.header(ring.active)
        plaintext: bytes | None = None
        value = stored
        try:
            if not stored.startswith(header):
                plaintext = c.type_.open(stored, ring)
                value = c.type_.seal(plaintext, ring)
                report.reencrypted += 1
            index = old_index
            if c.bidx_name and ring.active_index is not None:
                prefix = ring.active_index.encode("ascii") + b":"
                if old_index is None or not bytes(old_index).startswith(prefix):
                    if plaintext is None:
                        plaintext = c.type_.open(stored, ring)
                    index = ring.mac(c.type_.index_bytes(c.type_._loads(plaintext)))
                    report.reindexed += 1
        except DecryptionError as exc:
            pk = ", ".join(f"{pk.name}={row[pk.name]!r}" for pk in self.pk)
            raise type(exc)(
                f"rotation stopped at row {pk}: {exc}. Batches before it are committed; fix or "
                "restore the row and run again.",
                table=exc.table,
                column=exc.column,
            ) from None
        return value, bytes(index) if index is not None else None


def rotate_keys(
    engine: Engine,
    model: Any,
    *,
    batch_size: int = 500,
    columns: Sequence[str] | None = None,
    where: Any = None,
    progress: Callable[[int, int], None] | None = None,
    max_batches: int | None = None,
) -> RotationReport:
    """Re-encrypt ``model``'s encrypted columns with the active key and rebuild blind indexes.

    ``model`` is a mapped class or a ``Table``; ``columns`` limits the run to some columns;
    ``where`` adds a filter (e.g. one tenant's rows, run inside that tenant's
    :func:`~sa_patterns.tenant_scope` for per-tenant keyrings). ``progress(done, total)`` is
    called after each committed batch. Safe to stop at any time and to run again.
    """
    if batch_size < 1:
        raise ConfigurationError("batch_size must be at least 1.")
    started = time.perf_counter()
    plan = _Plan(model, columns, where)
    report = RotationReport(
        plan.source.name,
        tuple(c.name for c in plan.cols),
        active_key=plan.cols[0].ring.active,
        active_index_key=plan.cols[0].ring.active_index,
    )
    with engine.connect() as conn:
        report.to_do = plan.count(conn)
        conn.rollback()
    after: tuple[Any, ...] | None = None
    while max_batches is None or report.batches < max_batches:
        with engine.begin() as conn:
            after = plan.batch(conn, after, batch_size, report)
        if after is None:
            break
        if progress is not None:
            progress(report.rows, report.to_do)
    with engine.connect() as conn:
        report.remaining = plan.count(conn)
        conn.rollback()
    report.seconds = time.perf_counter() - started
    return report


async def rotate_keys_async(
    engine: AsyncEngine,
    model: Any,
    *,
    batch_size: int = 500,
    columns: Sequence[str] | None = None,
    where: Any = None,
    progress: Callable[[int, int], None] | None = None,
    max_batches: int | None = None,
) -> RotationReport:
    """:func:`rotate_keys` for an ``AsyncEngine``: one awaited transaction per batch."""
    if batch_size < 1:
        raise ConfigurationError("batch_size must be at least 1.")
    started = time.perf_counter()
    plan = _Plan(model, columns, where)
    report = RotationReport(
        plan.source.name,
        tuple(c.name for c in plan.cols),
        active_key=plan.cols[0].ring.active,
        active_index_key=plan.cols[0].ring.active_index,
    )
    async with engine.connect() as conn:
        report.to_do = await conn.run_sync(plan.count)
    after: tuple[Any, ...] | None = None
    while max_batches is None or report.batches < max_batches:
        async with engine.begin() as conn:
            after = await conn.run_sync(plan.batch, after, batch_size, report)
        if after is None:
            break
        if progress is not None:
            progress(report.rows, report.to_do)
    async with engine.connect() as conn:
        report.remaining = await conn.run_sync(plan.count)
    report.seconds = time.perf_counter() - started
    return report
