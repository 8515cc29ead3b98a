"""Keyset (cursor) pagination with opaque, signed cursors.

``OFFSET 100000`` makes PostgreSQL produce and throw away 100,000 rows for every page, and a row
inserted before the offset shifts every later page (duplicates, skipped rows). Keyset pagination
remembers the sort key of the last row instead and asks for the rows *after* it::

    WHERE (created_at, id) "after" (:last_created_at, :last_id) ORDER BY created_at DESC, id

which an index on the sort columns answers directly, however deep the page. Mixed directions
and NULLs (PostgreSQL sorts NULL last ascending and first descending, unless told otherwise)
cannot use a row-value comparison, so the condition is spelled out as
``(a after :a) OR (a = :a AND b after :b) OR ...`` with NULL-aware terms.

The cursor is the last row's key values plus a fingerprint of the ordering, serialised as JSON,
base64url-encoded and signed with HMAC-SHA256. A forged, truncated or foreign cursor is refused
with :class:`InvalidCursor` before any SQL runs. The key comes from ``key=`` or the
``SA_PATTERNS_CURSOR_KEY`` environment variable; the same key must be used by every process
that serves the same API.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, false, inspect, literal, or_, true, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression

from .errors import ConfigurationError, InvalidCursor

__all__ = ["CURSOR_KEY_ENV", "InvalidCursor", "Page", "paginate", "paginate_async"]

T = TypeVar("T")

#: Environment variable holding the cursor signing key when ``key=`` is not given.
CURSOR_KEY_ENV = "SA_PATTERNS_CURSOR_KEY"
_MAX_LIMIT = 10_000


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page: ``items`` in order, ``next_cursor`` to pass as ``after=`` (``None`` at the end),
    ``prev_cursor`` to pass as ``before=`` (``None`` on the first page)."""

    items: list[T]
    next_cursor: str | None
    has_more: bool
    limit: int = field(default=0)
    prev_cursor: str | None = None

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class _Key:
    expr: ColumnElement[Any]
    descending: bool
    nulls_first: bool

    @property
    def signature(self) -> str:
        return f"{self.expr}:{'d' if self.descending else 'a'}:{'f' if self.nulls_first else 'l'}"


def _parse_key(element: Any) -> _Key:
    """``col``, ``col.desc()``, ``col.asc().nulls_first()`` … → column, direction, NULL place."""
    nulls: bool | None = None
    if isinstance(element, UnaryExpression) and element.modifier in (
        operators.nulls_first_op,
        operators.nulls_last_op,
    ):
        nulls = element.modifier is operators.nulls_first_op
        element = element.element
    descending = False
    if isinstance(element, UnaryExpression) and element.modifier in (
        operators.desc_op,
        operators.asc_op,
    ):
        descending = element.modifier is operators.desc_op
        element = element.element
    expr = inspect(element) if hasattr(element, "__clause_element__") else element
    expr = expr.__clause_element__() if hasattr(expr, "__clause_element__") else expr
    if not isinstance(expr, ColumnElement):
        raise ConfigurationError(
            f"paginate(order_by=...) takes columns or col.asc()/.desc()[.nulls_first()/"
            f".nulls_last()]; got {element!r}."
        )
    # PostgreSQL's default: NULLS LAST for ASC, NULLS FIRST for DESC.
    return _Key(expr, descending, descending if nulls is None else nulls)


def _keys(statement: Select[Any], order_by: Any) -> list[_Key]:
    given = list(order_by) if isinstance(order_by, list | tuple) else [order_by]
    if not given or any(e is None for e in given):
        raise ConfigurationError(
            "paginate() needs order_by=...: keyset pagination is only defined for an explicit "
            "ordering that ends with a unique column (e.g. the primary key)."
        )
    keys = [_parse_key(e) for e in given]
    # Append the primary key of the selected entity so the ordering is total.
    entity = statement.column_descriptions[0].get("entity") if statement.column_descriptions else None
    if entity is not None:
        mapper = inspect(entity, raiseerr=False)
        pk = getattr(mapper, "primary_key", ())
        present = {str(k.expr) for k in keys}
        for column in pk:
            attr = mapper.get_property_by_column(column).class_attribute
            expr = attr.__clause_element__()
            if str(expr) not in present:
                keys.append(_Key(expr, keys[-1].descending, keys[-1].descending))
    return keys


def _fingerprint(keys: Sequence[_Key]) -> str:
    digest = hashlib.sha256("|".join(k.signature for k in keys).encode()).digest()
    return base64.urlsafe_b64encode(digest[:9]).decode()


# -- cursor encoding -----------------------------------------------------------------------------
def _tag(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return {"f": repr(value)}
    if isinstance(value, dt.datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"d": value.isoformat()}
    if isinstance(value, dt.time):
        return {"t": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"n": str(value)}
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode()}
    raise ConfigurationError(
        f"paginate(): cannot put a {type(value).__name__} sort key into a cursor; order by "
        "columns of type int, text, numeric, float, date/time, uuid or bytea."
    )


_UNTAG: dict[str, Callable[[str], Any]] = {
    "f": float,
    "dt": dt.datetime.fromisoformat,
    "d": dt.date.fromisoformat,
    "t": dt.time.fromisoformat,
    "n": decimal.Decimal,
    "u": uuid.UUID,
    "b": base64.b64decode,
}


def _untag(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((tag, raw),) = value.items()
        if tag in _UNTAG and isinstance(raw, str):
            return _UNTAG[tag](raw)
    if value is None or isinstance(value, bool | int | str):
        return value
    raise InvalidCursor("the cursor holds a value of an unknown kind.")


def _key_bytes(key: str | bytes | None) -> bytes:
    if key is None:
        key = os.environ.get(CURSOR_KEY_ENV) or None
    if not key:
        raise ConfigurationError(
            f"paginate() signs its cursors and needs a secret: pass key=... or set "
            f"{CURSOR_KEY_ENV} (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            " to the same value in every process serving the API."
        )
    return key.encode() if isinstance(key, str) else key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_cursor(values: Sequence[Any], fingerprint: str, key: bytes) -> str:
    payload = json.dumps([fingerprint, [_tag(v) for v in values]], separators=(",", ":")).encode()
    signature = hmac.new(key, payload, hashlib.sha256).digest()[:16]
    return f"{_b64(payload)}.{_b64(signature)}"


def decode_cursor(cursor: str, fingerprint: str, count: int, key: bytes) -> list[Any]:
    """The key values in ``cursor``, or :class:`InvalidCursor` (checked before any SQL)."""
    if not isinstance(cursor, str) or cursor.count(".") != 1 or len(cursor) > 4096:
        raise InvalidCursor("malformed pagination cursor: pass next_cursor back unchanged.")
    body, sig = cursor.split(".")
    try:
        payload, signature = _unb64(body), _unb64(sig)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("malformed pagination cursor (not base64url).") from exc
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(signature, expected):
        raise InvalidCursor(
            "pagination cursor signature does not match: it was altered, truncated, or signed "
            "with another key. Start again from the first page."
        )
    try:
        got_fingerprint, raw = json.loads(payload)
        values = [_untag(v) for v in raw]
    except (ValueError, TypeError) as exc:
        raise InvalidCursor("pagination cursor payload is unreadable.") from exc
    if got_fingerprint != fingerprint or len(values) != count:
        raise InvalidCursor(
            "this cursor was made for a different ordering; pass the same order_by you used "
            "for the first page."
        )
    return values


# -- the keyset condition ------------------------------------------------------------------------
def _after(key: _Key, value: Any) -> ColumnElement[bool]:
    """Rows strictly after ``value`` along ``key``'s ordering (NULL placement included)."""
    col = key.expr
    if value is None:
        return col.is_not(None) if key.nulls_first else false()
    beyond = col < value if key.descending else col > value
    return beyond if key.nulls_first else or_(beyond, col.is_(None))


def _equal(key: _Key, value: Any) -> ColumnElement[bool]:
    return key.expr.is_(None) if value is None else key.expr == value


def keyset_condition(keys: Sequence[_Key], values: Sequence[Any]) -> ColumnElement[bool]:
    """``(a, b) > (:a, :b)`` when it means the same (one direction, no NULLs possible): that
    form is an index range scan. Otherwise the expanded, NULL-aware OR of ANDs."""
    one_direction = len({k.descending for k in keys}) == 1
    no_nulls = all(v is not None and getattr(k.expr, "nullable", True) is False
                   for k, v in zip(keys, values, strict=False))
    if one_direction and no_nulls and len(keys) > 1:
        row, bound = tuple_(*[k.expr for k in keys]), tuple_(*[literal(v, k.expr.type)
                                                              for k, v in zip(keys, values, strict=False)])
        return row < bound if keys[0].descending else row > bound
    terms = []
    for i, key in enumerate(keys):
        eqs = [_equal(keys[j], values[j]) for j in range(i)]
        terms.append(and_(*eqs, _after(key, values[i])))
    return or_(*terms) if terms else true()


def _order(key: _Key) -> Any:
    ordered = key.expr.desc() if key.descending else key.expr.asc()
    return ordered.nulls_first() if key.nulls_first else ordered.nulls_last()


def _reverse(key: _Key) -> _Key:
    return _Key(key.expr, not key.descending, not key.nulls_first)


def _prepare(
    statement: Select[Any],
    order_by: Any,
    after: str | None,
    before: str | None,
    limit: int,
    key: str | bytes | None,
) -> tuple[Select[Any], _Plan]:
    if not 1 <= limit <= _MAX_LIMIT:
        raise ConfigurationError(f"paginate(limit=...) must be between 1 and {_MAX_LIMIT}.")
    if after is not None and before is not None:
        raise ConfigurationError("paginate(): pass after= or before=, not both.")
    secret = _key_bytes(key)
    keys = _keys(statement, order_by)
    fingerprint = _fingerprint(keys)
    # A page *before* a cursor is the page after it in the reversed order, read back to front.
    walk = [_reverse(k) for k in keys] if before is not None else keys
    stmt = statement.order_by(None).order_by(*[_order(k) for k in walk])
    cursor = after if after is not None else before
    if cursor is not None:
        values = decode_cursor(cursor, fingerprint, len(keys), secret)
        stmt = stmt.where(keyset_condition(walk, values))
    stmt = stmt.add_columns(*[k.expr.label(f"_sap_k{i}") for i, k in enumerate(keys)])
    plan = _Plan(len(statement.column_descriptions), limit, fingerprint, secret,
                 backward=before is not None, from_cursor=cursor is not None)
    return stmt.limit(limit + 1), plan


@dataclass(frozen=True)
class _Plan:
    width: int
    limit: int
    fingerprint: str
    secret: bytes
    backward: bool
    from_cursor: bool

    def cursor(self, row: Any) -> str:
        return encode_cursor(list(row[self.width :]), self.fingerprint, self.secret)


def _page(rows: Sequence[Any], plan: _Plan) -> Page[Any]:
    more_in_walk = len(rows) > plan.limit
    rows = list(rows[: plan.limit])
    if plan.backward:
        rows.reverse()
    items = [row[0] if plan.width == 1 else tuple(row[: plan.width]) for row in rows]
    if not rows:
        return Page(items, None, False, plan.limit, None)
    # Forward: more after iff the walk found more; rows before iff we started from a cursor.
    # Backward: the cursor row itself lies after; rows before iff the walk found more.
    more_after = True if plan.backward else more_in_walk
    more_before = more_in_walk if plan.backward else plan.from_cursor
    return Page(
        items,
        plan.cursor(rows[-1]) if more_after else None,
        more_after,
        plan.limit,
        plan.cursor(rows[0]) if more_before else None,
    )


def paginate(
    session: Session,
    statement: Select[Any],
    *,
    order_by: Any,
    after: str | None = None,
    before: str | None = None,
    limit: int = 50,
    key: str | bytes | None = None,
) -> Page[Any]:
    """One page of ``statement`` ordered by ``order_by``: the first page, the page after cursor
    ``after`` (a ``next_cursor``), or the page before cursor ``before`` (a ``prev_cursor``).

    ``order_by`` is a column or a list of columns/``.asc()``/``.desc()`` with optional
    ``.nulls_first()``/``.nulls_last()``; the selected entity's primary key is appended when
    missing so the order is total. Any ORDER BY on ``statement`` is replaced. Index the sort
    columns in the same order and directions to make every page an index range scan.
    """
    stmt, plan = _prepare(statement, order_by, after, before, limit, key)
    return _page(session.execute(stmt).all(), plan)


async def paginate_async(
    session: AsyncSession,
    statement: Select[Any],
    *,
    order_by: Any,
    after: str | None = None,
    before: str | None = None,
    limit: int = 50,
    key: str | bytes | None = None,
) -> Page[Any]:
    """The async twin of :func:`paginate`."""
    stmt, plan = _prepare(statement, order_by, after, before, limit, key)
    return _page((await session.execute(stmt)).all(), plan)
