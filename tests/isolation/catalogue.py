"""The catalogue: every way the matrix reaches rows through the ORM, and the known gaps.

A shape is one small coroutine registered with :func:`read` or :func:`write`: a name, a
one-line description (it becomes a row of ``docs/isolation.md``), and the model kinds it applies
to (a kind declared in another style, ``Kind.like``, takes the shapes of the kind it varies:
:func:`applies`). It is written once against :class:`~.harness.Runner` and runs on ``Session`` and
``AsyncSession`` alike (``sync_only`` for API that only the sync session has). A shape added here
is a row of the matrix, crossed with every kind it applies to, both modes and both scopes (the
tenant, and no tenant), with no other change: :func:`cells` enumerates them and
``test_isolation_matrix.py`` parametrizes from it.

Shapes attack on purpose: they name other tenants' ids, write to keys of other tenants, and hold
objects loaded under another tenant. The oracle (:mod:`.harness`) decides; shapes assert nothing.

:data:`XFAIL` lists the cells that fail today, each with its cause (:data:`XFAIL_ON` those that
fail on some SQLAlchemy versions only); they run as strict xfails, so a fix makes its cells XPASS
and fail until their entry is deleted here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy
from sqlalchemy import (
    ColumnElement,
    ForeignKey,
    delete,
    exists,
    func,
    insert,
    inspect,
    literal,
    select,
    true,
    union,
    union_all,
    update,
)
from sqlalchemy import join as sa_join
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    aliased,
    contains_eager,
    immediateload,
    joinedload,
    mapped_column,
    raiseload,
    registry,
    relationship,
    selectinload,
    subqueryload,
    with_polymorphic,
)
from sqlalchemy.orm import join as orm_join

from sa_patterns import SoftDeleteMixin, TenantMixin
from sa_patterns.errors import (
    ConfigurationError,
    ConflictError,
    SAPatternsError,
    TenantViolation,
    UnsupportedStatement,
)

from .harness import Cell, Prepare, Run, Runner, Shape
from .models import (
    FOREIGN,
    KINDS,
    NEW_ID,
    TENANT,
    Kind,
    Membership,
    Person,
    Sink,
    Team,
    seed_objects,
)

SHAPES: dict[str, Shape] = {}

Applies = Callable[[Kind], bool]


def ALL(k: Kind) -> bool:
    return True


def REL(k: Kind) -> bool:
    return k.relational


def POLY(k: Kind) -> bool:
    return k.sub is not None


def ASSOC(k: Kind) -> bool:
    return k.name == "assoc"


def TENANT_KINDS(k: Kind) -> bool:
    return k.tenant


def SOFT(k: Kind) -> bool:
    return k.soft


def NOT_JOINED(k: Kind) -> bool:
    """SQLAlchemy writes one table per ORM INSERT ... VALUES / FROM SELECT / UPDATE SET: a
    joined-inheritance subclass (two tables) cannot take these shapes at all."""
    return k.name != "joined"


def TENANT_NOT_JOINED(k: Kind) -> bool:
    return k.tenant and NOT_JOINED(k)


def CASCADE(k: Kind) -> bool:
    """Kinds whose parent cascades deletes to soft-deletable children."""
    return k.relational and k.parent is not None and hasattr(k.parent, "deleted_at")


def _register(
    name: str,
    kind: Literal["read", "write"],
    applies: Applies,
    doc: str,
    *,
    prepare: Prepare | None = None,
    foreign: bool = False,
    sync_only: bool = False,
    hard: bool = False,
    refuses: type[SAPatternsError] | None = None,
    refuses_on: tuple[tuple[str, type[SAPatternsError]], ...] = (),
) -> Callable[[Run], Run]:
    def register(run: Run) -> Run:
        assert name not in SHAPES, f"shape {name!r} registered twice"
        SHAPES[name] = Shape(
            name, kind, doc, applies, run, prepare=prepare, foreign=foreign,
            sync_only=sync_only, hard=hard, refuses=refuses, refuses_on=refuses_on,
        )
        return run

    return register


def read(name: str, applies: Applies, doc: str, **kw: Any) -> Callable[[Run], Run]:
    return _register(name, "read", applies, doc, **kw)


def write(name: str, applies: Applies, doc: str, **kw: Any) -> Callable[[Run], Run]:
    return _register(name, "write", applies, doc, **kw)


# --- helpers ---------------------------------------------------------------------------

_SEED = seed_objects()


def ids(cls: type[Any]) -> list[int]:
    """Every seeded id of ``cls`` (subclasses included): all tenants, live and deleted."""
    return sorted(o.id for o in _SEED if isinstance(o, cls))


def own_ids(cls: type[Any]) -> list[int]:
    """The tenant's live rows of ``cls`` (for a model without tenants: its live rows)."""
    return sorted(
        o.id for o in _SEED
        if isinstance(o, cls) and getattr(o, "tenant_id", TENANT) == TENANT
        and getattr(o, "deleted_at", None) is None
    )


def foreign_id(cls: type[Any]) -> int:
    """A live row of the foreign tenant (for a model without tenants: a dead row)."""
    if hasattr(cls, "tenant_id"):
        return min(int(o.id) for o in _SEED if isinstance(o, cls) and o.tenant_id == FOREIGN)
    return min(int(o.id) for o in _SEED if isinstance(o, cls) and o.deleted_at is not None)


def label_table(cls: type[Any]) -> str:
    """The table holding ``cls.label`` (the base table under joined inheritance)."""
    return str(inspect(cls).base_mapper.local_table.name)


def columns(cls: type[Any]) -> list[Any]:
    """id and label, plus ``tenant_id``/``deleted_at`` when the model has them (the oracle
    checks them in every returned row)."""
    cols = [cls.id, cls.label]
    cols += [getattr(cls, c) for c in ("tenant_id", "deleted_at") if hasattr(cls, c)]
    return cols


def fk(k: Kind) -> Any:
    assert k.child is not None and k.fk is not None
    return getattr(k.child, k.fk)


def rel(k: Kind) -> Any:
    assert k.children is not None
    return k.children


def up(k: Kind) -> Any:
    assert k.parent_of is not None
    return k.parent_of


def P(k: Kind) -> Any:
    assert k.parent is not None
    return k.parent


def C(k: Kind) -> Any:
    assert k.child is not None
    return k.child


def S(k: Kind) -> Any:
    assert k.sub is not None
    return k.sub


def on(k: Kind) -> ColumnElement[bool]:
    return fk(k) == P(k).id  # type: ignore[no-any-return]


# --- prepare steps: what a run step holds ----------------------------------------------------


async def load_roots(r: Runner, k: Kind) -> list[Any]:
    return await r.objects(select(k.root).order_by(k.root.id))


async def load_roots_then_change(r: Runner, k: Kind) -> list[Any]:
    """The tenant's rows, then raw SQL relabels one and (soft kinds) soft-deletes another."""
    objs = await load_roots(r, k)
    table = label_table(k.root)
    await r.raw(f"UPDATE {table} SET label = label || :v WHERE id = :i", v="+v2", i=objs[0].id)
    if k.soft:
        await r.raw(f"UPDATE {table} SET deleted_at = now() WHERE id = :i", i=objs[-1].id)
    return objs


async def load_roots_detached(r: Runner, k: Kind) -> list[Any]:
    objs = await load_roots(r, k)
    for obj in objs:
        r.expunge(obj)
        setattr(obj, k.write_col, f"{r.tag}:detached{obj.id}")
    return objs


async def load_parents(r: Runner, k: Kind) -> list[Any]:
    return await r.objects(select(P(k)).order_by(P(k).id))


async def load_children(r: Runner, k: Kind) -> list[Any]:
    return await r.objects(select(C(k)).order_by(C(k).id))


async def load_first_parent(r: Runner, k: Kind) -> Any:
    return await r.get(P(k), min(own_ids(P(k))))


async def load_teams(r: Runner, k: Kind) -> list[Any]:
    return await r.objects(select(Team).order_by(Team.id))


async def load_team_links(r: Runner, k: Kind) -> Any:
    """The tenant's first team, its memberships and their people loaded."""
    team = await r.get(Team, TENANT * 100 + 1)
    for membership in await r.load(team, "memberships"):  # type: ignore[attr-defined]
        await r.load(membership, "person")
    return team


# === reads ==================================================================================


@read("entity", ALL, "`select(Model)`: ORM entities")
async def _entity(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(k.root))


@read("columns", ALL, "`select(Model.id, Model.label, ...)`: column rows")
async def _columns(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(select(*columns(k.root)))


@read("by_ids", ALL, "`select(Model).where(Model.id.in_(...))` naming every tenant's ids")
async def _by_ids(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(k.root).where(k.root.id.in_(ids(k.root))))


@read("limit_offset", ALL, "`select(Model).order_by(Model.id.desc()).limit(2).offset(1)`: a page")
async def _limit_offset(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(k.root).order_by(k.root.id.desc()).limit(2).offset(1))


@read("yield_per", ALL, "`execution_options(yield_per=2)` (sync) / `AsyncSession.stream_scalars()`")
async def _yield_per(r: Runner, k: Kind, held: Any) -> object:
    return await r.stream(select(k.root))


@read("count", ALL, "`select(func.count()).select_from(Model)`")
async def _count(r: Runner, k: Kind, held: Any) -> object:
    return await r.scalar(select(func.count()).select_from(k.root))


@read("aggregate", ALL, "`count`, `max` and `string_agg` over the model")
async def _aggregate(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(select(
        func.count(k.root.id), func.max(k.root.id), func.string_agg(k.root.label, ",")
    ))


@read("group_by", ALL, "`select(Model.label, func.count()).group_by(Model.label)`")
async def _group_by(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(select(k.root.label, func.count()).group_by(k.root.label))


@read("join_relationship", REL, "`select(Child).join(Child.parent)`: join along a relationship")
async def _join_rel(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(C(k)).join(up(k)))


@read("join_relationship_columns", REL, "`select(Parent.label, Child.label).join(Parent.children)`")
async def _join_rel_cols(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(select(P(k).label, C(k).label).join(rel(k)))


@read("outerjoin", REL, "`select(Parent.label, Child.label).outerjoin(Parent.children)`: the "
      "criteria stay in ON")
async def _outerjoin(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(select(P(k).label, C(k).label).outerjoin(rel(k)))


@read("join_on", REL, "`select(...).join(Child, Child.parent_id == Parent.id)`: explicit ON clause")
async def _join_on(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(select(P(k).label, C(k).label).join(C(k), on(k)))


@read("orm_join", REL, "`select(...).select_from(orm.join(Parent, Child, Parent.children))`")
async def _orm_join(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(
        select(P(k).label, C(k).label).select_from(orm_join(P(k), C(k), rel(k)))
    )


@read("orm_join_count", REL, "`select(func.count()).select_from(orm.join(Parent, Child, ...))`")
async def _orm_join_count(r: Runner, k: Kind, held: Any) -> object:
    return await r.scalar(select(func.count()).select_from(orm_join(P(k), C(k), rel(k))))


@read("sa_join", REL, "`select(...).select_from(sqlalchemy.join(Parent, Child, on))`")
async def _sa_join(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(select(P(k).label, C(k).label).select_from(sa_join(P(k), C(k), on(k))))


@read("sa_join_count", REL, "`select(func.count()).select_from(sqlalchemy.join(Parent, Child, on))`")
async def _sa_join_count(r: Runner, k: Kind, held: Any) -> object:
    return await r.scalar(select(func.count()).select_from(sa_join(P(k), C(k), on(k))))


@read("aliased", ALL, "`select(aliased(Model))`")
async def _aliased(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(aliased(k.root)))


@read("aliased_join", REL, "`select(pa.label, ca.label).join(ca, pa.children)` with two aliases")
async def _aliased_join(r: Runner, k: Kind, held: Any) -> object:
    pa, ca = aliased(P(k)), aliased(C(k))
    return await r.rows(select(pa.label, ca.label).join(ca, getattr(pa, rel(k).key)))


@read("of_type", POLY, "`select(...).join(Owner.docs.of_type(Report))`")
async def _of_type(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(select(P(k).label, S(k).label).join(rel(k).of_type(S(k))))


@read("of_type_selectin", POLY, "`selectinload(Owner.docs.of_type(Report))`")
async def _of_type_selectin(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(P(k)).options(selectinload(rel(k).of_type(S(k)))))


@read("polymorphic_base", POLY, "`select(Base)` of a hierarchy: rows of every subclass")
async def _poly_base(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(C(k)))


@read("with_polymorphic", POLY, "`select(with_polymorphic(Base, [Sub]))`")
async def _with_poly(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(with_polymorphic(C(k), [S(k)])))


@read("subquery", ALL, "`select(sq.c.id, sq.c.label)` from `select(Model).subquery()`")
async def _subquery(r: Runner, k: Kind, held: Any) -> object:
    sq = select(k.root).subquery()
    return await r.rows(select(sq.c.id, sq.c.label))


@read("subquery_count", ALL, "`select(func.count()).select_from(select(Model.id).subquery())`")
async def _subquery_count(r: Runner, k: Kind, held: Any) -> object:
    return await r.scalar(select(func.count()).select_from(select(k.root.id).subquery()))


@read("in_subquery", REL, "`select(Parent).where(Parent.id.in_(select(Child.parent_id)))`")
async def _in_subquery(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(P(k)).where(P(k).id.in_(select(fk(k)))))


@read("exists", REL, "`select(Parent).where(exists().where(Child.parent_id == Parent.id))`, correlated")
async def _exists(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(P(k)).where(exists().where(on(k))))


@read("exists_scalar", ALL, "`select(exists().where(Model.id == <another tenant's id>))`")
async def _exists_scalar(r: Runner, k: Kind, held: Any) -> object:
    return await r.scalar(select(exists().where(k.root.id == foreign_id(k.root))))


@read("any", REL, "`select(Parent).where(Parent.children.any())`")
async def _any(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(P(k)).where(rel(k).any()))


@read("has", REL, "`select(Child).where(Child.parent.has())`")
async def _has(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(C(k)).where(up(k).has()))


@read("scalar_subquery", ALL, "`select(select(func.count(Model.id)).scalar_subquery())`: no outer FROM")
async def _scalar_subquery(r: Runner, k: Kind, held: Any) -> object:
    return await r.scalar(select(select(func.count(k.root.id)).scalar_subquery()))


@read("correlated_scalar", REL, "`select(Parent.id, <count of its children>.scalar_subquery())`")
async def _correlated_scalar(r: Runner, k: Kind, held: Any) -> object:
    children = select(func.count(C(k).id)).where(on(k)).scalar_subquery()
    return await r.rows(select(P(k).id, P(k).label, children))


@read("cte", ALL, "`select(c.c.id, c.c.label)` from `select(Model).cte()`")
async def _cte(r: Runner, k: Kind, held: Any) -> object:
    c = select(k.root.id, k.root.label).cte("c")
    return await r.rows(select(c.c.id, c.c.label))


@read("cte_recursive", ALL, "a recursive CTE whose anchor and recursive terms both read the model")
async def _cte_recursive(r: Runner, k: Kind, held: Any) -> object:
    walk = select(k.root.id, k.root.label, literal(0).label("depth")).cte("walk", recursive=True)
    walk = walk.union_all(
        select(k.root.id, k.root.label, walk.c.depth + 1)
        .join(walk, k.root.id == walk.c.id)
        .where(walk.c.depth < 2)
    )
    return await r.rows(select(walk.c.id, walk.c.label, walk.c.depth))


@read("union", ALL, "`union_all(select(Model.id, Model.label)..., select(...))`")
async def _union(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(union_all(
        select(k.root.id, k.root.label).where(k.root.id < 200),
        select(k.root.id, k.root.label).where(k.root.id >= 200),
    ))


@read("union_entity", ALL, "`select(aliased(Model, union(select(Model), ...).subquery()))`")
async def _union_entity(r: Runner, k: Kind, held: Any) -> object:
    u = union(
        select(k.root).where(k.root.id < 200), select(k.root).where(k.root.id >= 200)
    ).subquery()
    return await r.objects(select(aliased(k.root, u)))


@read("lateral", REL, "`select(Parent.label, lat.c.label).join(lat, true())`, LATERAL over children")
async def _lateral(r: Runner, k: Kind, held: Any) -> object:
    lat = select(C(k).label).where(on(k)).order_by(C(k).id).limit(2).lateral()
    return await r.rows(select(P(k).label, lat.c.label).join(lat, true()))


# --- relationship loading ---


@read("lazy", REL, "lazy load of a one-to-many collection", prepare=load_parents)
async def _lazy(r: Runner, k: Kind, held: list[Any]) -> object:
    return [await r.load(p, rel(k).key) for p in held]


@read("lazy_many_to_one", REL, "lazy load of a many-to-one reference", prepare=load_children)
async def _lazy_m2o(r: Runner, k: Kind, held: list[Any]) -> object:
    return [await r.load(c, up(k).key) for c in held]


@read("joinedload", REL, "`options(joinedload(Parent.children))`")
async def _joinedload(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(P(k)).options(joinedload(rel(k))))


@read("joinedload_many_to_one", REL, "`options(joinedload(Child.parent))`")
async def _joinedload_m2o(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(C(k)).options(joinedload(up(k))))


@read("selectinload", REL, "`options(selectinload(Parent.children))`")
async def _selectinload(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(P(k)).options(selectinload(rel(k))))


@read("selectinload_many_to_one", REL, "`options(selectinload(Child.parent))`")
async def _selectinload_m2o(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(C(k)).options(selectinload(up(k))))


@read("subqueryload", REL, "`options(subqueryload(Parent.children))`")
async def _subqueryload(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(P(k)).options(subqueryload(rel(k))))


@read("immediateload", REL, "`options(immediateload(Parent.children))`")
async def _immediateload(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(P(k)).options(immediateload(rel(k))))


@read("contains_eager", REL, "`join(Parent.children).options(contains_eager(Parent.children))`")
async def _contains_eager(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(P(k)).join(rel(k)).options(contains_eager(rel(k))))


@read("raiseload", REL, "`options(selectinload(Parent.children), raiseload('*'))`")
async def _raiseload(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(P(k)).options(selectinload(rel(k)), raiseload("*")))


@read("lazy_foreign", REL, "lazy load, under the tenant, of a collection of a parent loaded "
      "under another tenant", prepare=load_parents, foreign=True)
async def _lazy_foreign(r: Runner, k: Kind, held: list[Any]) -> object:
    return [await r.load(p, rel(k).key) for p in held]


@read("lazy_many_to_one_foreign", REL, "lazy load, under the tenant, of the parent of a child "
      "loaded under another tenant", prepare=load_children, foreign=True)
async def _lazy_m2o_foreign(r: Runner, k: Kind, held: list[Any]) -> object:
    return [await r.load(c, up(k).key) for c in held]


# --- identity map, refresh, expiry ---


@read("get", ALL, "`session.get(Model, id)` for every tenant's ids")
async def _get(r: Runner, k: Kind, held: Any) -> object:
    return [await r.get(k.root, i) for i in ids(k.root)]


@read("get_foreign_cached", ALL, "`session.get()` of an object in the identity map, loaded under "
      "another tenant", prepare=load_roots, foreign=True)
async def _get_foreign(r: Runner, k: Kind, held: list[Any]) -> object:
    return [await r.get(k.root, obj.id) for obj in held]


@read("refresh", ALL, "`session.refresh(obj)` after raw SQL changed (and soft-deleted) rows",
      prepare=load_roots_then_change)
async def _refresh(r: Runner, k: Kind, held: list[Any]) -> object:
    return [await r.refresh(obj) for obj in held]


@read("refresh_foreign", ALL, "`session.refresh(obj)`, under the tenant, of objects loaded under "
      "another tenant", prepare=load_roots, foreign=True)
async def _refresh_foreign(r: Runner, k: Kind, held: list[Any]) -> object:
    return [await r.refresh(obj) for obj in held]


@read("expired", ALL, "reload of expired attributes after raw SQL changed rows",
      prepare=load_roots_then_change)
async def _expired(r: Runner, k: Kind, held: list[Any]) -> object:
    for obj in held:
        r.expire(obj)
    return [await r.load(obj, "label") for obj in held]


@read("expired_foreign", ALL, "reload, under the tenant, of expired attributes of objects loaded "
      "under another tenant", prepare=load_roots, foreign=True)
async def _expired_foreign(r: Runner, k: Kind, held: list[Any]) -> object:
    for obj in held:
        r.expire(obj)
    return [await r.load(obj, "label") for obj in held]


@read("populate_existing", ALL, "`execution_options(populate_existing=True)` over loaded objects",
      prepare=load_roots_then_change)
async def _populate_existing(r: Runner, k: Kind, held: list[Any]) -> object:
    return await r.objects(select(k.root).execution_options(populate_existing=True))


@read("with_for_update", ALL, "`select(Model).with_for_update()`")
async def _with_for_update(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(k.root).with_for_update())


@read("with_for_update_of", REL, "`select(Parent).join(Parent.children).with_for_update(of=Parent)`")
async def _with_for_update_of(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(select(P(k)).join(rel(k)).with_for_update(of=P(k)))


# --- the legacy Query API (sync only) ---


@read("query", ALL, "`session.query(Model).all()`", sync_only=True)
async def _query(r: Runner, k: Kind, held: Any) -> object:
    return r.sync.query(k.root).all()


@read("query_filter", ALL, "`session.query(Model).filter(Model.id.in_(...))` naming every "
      "tenant's ids", sync_only=True)
async def _query_filter(r: Runner, k: Kind, held: Any) -> object:
    return r.sync.query(k.root).filter(k.root.id.in_(ids(k.root))).all()


@read("query_count", ALL, "`session.query(Model).count()`", sync_only=True)
async def _query_count(r: Runner, k: Kind, held: Any) -> object:
    return r.sync.query(k.root).count()


@read("query_scalar", ALL, "`session.query(func.count(Model.id)).scalar()`", sync_only=True)
async def _query_scalar(r: Runner, k: Kind, held: Any) -> object:
    return r.sync.query(func.count(k.root.id)).scalar()


@read("query_join", REL, "`session.query(Parent.label, Child.label).join(Parent.children)`",
      sync_only=True)
async def _query_join(r: Runner, k: Kind, held: Any) -> object:
    return r.sync.query(P(k).label, C(k).label).join(rel(k)).all()


@read("query_joinedload", REL, "`session.query(Parent).options(joinedload(Parent.children))`",
      sync_only=True)
async def _query_joinedload(r: Runner, k: Kind, held: Any) -> object:
    return r.sync.query(P(k)).options(joinedload(rel(k))).all()


# --- association objects ---


@read("association_path", ASSOC, "`selectinload(Team.memberships).joinedload(Membership.person)`")
async def _assoc_path(r: Runner, k: Kind, held: Any) -> object:
    return await r.objects(
        select(Team).options(selectinload(Team.memberships).joinedload(Membership.person))
    )


@read("association_join", ASSOC, "`select(Team.label, Person.label)` joined through the "
      "association object")
async def _assoc_join(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(
        select(Team.label, Person.label).join(Team.memberships).join(Membership.person)
    )


@read("association_proxy", ASSOC, "`team.people`, an association proxy over the association "
      "object (lazy loads)", prepare=load_teams)
async def _assoc_proxy(r: Runner, k: Kind, held: list[Any]) -> object:
    out = []
    for team in held:
        for membership in await r.load(team, "memberships"):  # type: ignore[attr-defined]
            await r.load(membership, "person")
        out.append(list(team.people))
    return out


# === writes =================================================================================


def _new(r: Runner, k: Kind, n: int) -> dict[str, Any]:
    return k.new(n, r.tag)


@write("update", ALL, "`update(Model).values(label=...)`")
async def _update(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(update(k.root).values({k.write_col: f"{r.tag}:upd"}))


@write("update_by_ids", ALL, "`update(Model).where(Model.id.in_(...)).values(...)` naming every "
       "tenant's ids")
async def _update_ids(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(
        update(k.root).where(k.root.id.in_(ids(k.root))).values({k.write_col: f"{r.tag}:upd"})
    )


@write("update_returning", ALL, "`update(Model)...returning(Model.id, Model.label)`")
async def _update_returning(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(
        update(k.root).where(k.root.id.in_(ids(k.root))).values({k.write_col: f"{r.tag}:upd"})
        .returning(k.root.id, getattr(k.root, k.write_col))
    )


@write("update_by_pk", ALL, "ORM bulk UPDATE by primary key: `execute(update(Model), [dicts])` "
       "naming every tenant's ids")
async def _update_by_pk(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(
        update(k.root), [{"id": i, k.write_col: f"{r.tag}:pk{i}"} for i in ids(k.root)]
    )


@write("update_tenant_id", TENANT_NOT_JOINED, "`update(Model).values(tenant_id=<other tenant>)`",
       refuses=TenantViolation)
async def _update_tenant(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(update(k.root).values(tenant_id=FOREIGN))


@write("delete", ALL, "`delete(Model).where(Model.id.in_(...))` naming every tenant's ids (soft "
       "delete on soft-deletable models)")
async def _delete(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(delete(k.root).where(k.root.id.in_(ids(k.root))))


@write("delete_returning", ALL, "`delete(Model)...returning(Model.id, Model.label)`")
async def _delete_returning(r: Runner, k: Kind, held: Any) -> object:
    return await r.rows(
        delete(k.root).where(k.root.id.in_(ids(k.root)))
        .returning(k.root.id, getattr(k.root, k.write_col))
    )


@write("delete_by_pk", SOFT, "ORM bulk DELETE by primary key, `execute(delete(Model), [dicts])` "
       "naming every tenant's ids (SQLAlchemy has it for soft deletes only, which are UPDATEs)")
async def _delete_by_pk(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(delete(k.root), [{"id": i} for i in ids(k.root)])


@write("insert_values", NOT_JOINED, "`insert(Model).values(...)`")
async def _insert_values(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(insert(k.root).values(**_new(r, k, 1)))


@write("insert_params", ALL, "`execute(insert(Model), [dicts])`: ORM bulk INSERT")
async def _insert_params(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(insert(k.root), [_new(r, k, 1), _new(r, k, 2)])


@write("insert_multi_values", NOT_JOINED, "`insert(Model).values([dict, dict])`: one multi-VALUES INSERT")
async def _insert_multi(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(insert(k.root).values([_new(r, k, 1), _new(r, k, 2)]))


@write("insert_returning", ALL, "`insert(Model).returning(Model)` with parameter dicts")
async def _insert_returning(r: Runner, k: Kind, held: Any) -> object:
    return list((await r.execute(insert(k.root).returning(k.root), [_new(r, k, 1)])).scalars())


@write("insert_foreign_tenant", TENANT_NOT_JOINED, "`insert(Model).values(..., tenant_id=<other "
       "tenant>)`", refuses=TenantViolation)
async def _insert_foreign(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(insert(k.root).values(**_new(r, k, 1), tenant_id=FOREIGN))


def _copy_columns(k: Kind) -> tuple[list[str], list[Any]]:
    """Target column names and source expressions copying ``root`` rows under new ids."""
    table = inspect(k.root).local_table
    names, exprs = [], []
    for col in table.c:
        if col.name in ("deleted_at", "deleted_by", "delete_batch"):
            continue
        attr = getattr(k.root, col.key)
        names.append(col.key)
        exprs.append(attr + NEW_ID if col.key == "id" else attr)
    return names, exprs


@write("insert_from_select", NOT_JOINED, "`insert(Model).from_select(cols, select(Model...))`: copy the "
       "tenant's rows (tenant_id copied from the source)")
async def _insert_from_select(r: Runner, k: Kind, held: Any) -> object:
    names, exprs = _copy_columns(k)
    return await r.execute(insert(k.root).from_select(names, select(*exprs)))


@write("insert_from_select_sink", ALL, "`insert(Sink).from_select(..., select(Model.label))` into "
       "a table without tenants")
async def _insert_sink(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(
        insert(Sink).from_select(["id", "label"], select(k.root.id + NEW_ID, k.root.label))
    )


@write("upsert", NOT_JOINED, "`postgresql.insert(Model).on_conflict_do_update(...)` with a new row and "
       "another tenant's key (on `soft`: a deleted row's)")
async def _upsert(r: Runner, k: Kind, held: Any) -> object:
    stmt = pg_insert(k.root)
    stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"label": stmt.excluded.label})
    return await r.execute(stmt, [_new(r, k, 1), {**_new(r, k, 2), "id": foreign_id(k.root)}])


@write("insert_many_update", NOT_JOINED, "`sa_patterns.insert_many(..., on_conflict='update')` with a new "
       "row and another tenant's key (on `soft`: a deleted row's)", refuses=TenantViolation,
       refuses_on=(("soft", ConflictError),))
async def _insert_many_update(r: Runner, k: Kind, held: Any) -> object:
    return await r.insert_many(
        k.root, [_new(r, k, 1), {**_new(r, k, 2), "id": foreign_id(k.root)}], on_conflict="update"
    )


@write("insert_many_ignore", NOT_JOINED, "`sa_patterns.insert_many(..., on_conflict='ignore')` with a new "
       "row and another tenant's key (on `soft`: a deleted row's)")
async def _insert_many_ignore(r: Runner, k: Kind, held: Any) -> object:
    return await r.insert_many(
        k.root, [_new(r, k, 1), {**_new(r, k, 2), "id": foreign_id(k.root)}], on_conflict="ignore"
    )


# --- the unit of work ---


@write("add", ALL, "`session.add(Model(...))` and flush")
async def _add(r: Runner, k: Kind, held: Any) -> object:
    obj = k.root(**_new(r, k, 1))
    r.add(obj)
    return obj


@write("dirty", ALL, "change loaded objects and flush", prepare=load_roots)
async def _dirty(r: Runner, k: Kind, held: list[Any]) -> object:
    for obj in held:
        setattr(obj, k.write_col, f"{r.tag}:dirty{obj.id}")
    return None


@write("dirty_foreign", ALL, "change, under the tenant, objects loaded under another tenant, and "
       "flush", prepare=load_roots, foreign=True, refuses=TenantViolation)
async def _dirty_foreign(r: Runner, k: Kind, held: list[Any]) -> object:
    for obj in held:
        setattr(obj, k.write_col, f"{r.tag}:dirty{obj.id}")
    return None


@write("session_delete", ALL, "`session.delete(obj)` and flush", prepare=load_roots)
async def _session_delete(r: Runner, k: Kind, held: list[Any]) -> object:
    for obj in held:
        await r.delete(obj)
    return None


@write("session_delete_foreign", ALL, "`session.delete(obj)`, under the tenant, of objects loaded "
       "under another tenant", prepare=load_roots, foreign=True, refuses=TenantViolation)
async def _session_delete_foreign(r: Runner, k: Kind, held: list[Any]) -> object:
    for obj in held:
        await r.delete(obj)
    return None


@write("merge", ALL, "`session.merge(Model(id=..., label=...))` of the tenant's own rows")
async def _merge(r: Runner, k: Kind, held: Any) -> object:
    return [
        await r.merge(k.root(**{"id": i, k.write_col: f"{r.tag}:merged{i}"}))
        for i in own_ids(k.root)[:2]
    ]


@write("merge_foreign", ALL, "`session.merge(obj)` of objects detached from another tenant's "
       "session", prepare=load_roots_detached, foreign=True, refuses=TenantViolation)
async def _merge_foreign(r: Runner, k: Kind, held: list[Any]) -> object:
    return [await r.merge(obj) for obj in held]


@write("cascade_bulk_delete", CASCADE, "`delete(Parent)` of one parent: the soft delete cascades "
       "to its children")
async def _cascade_bulk(r: Runner, k: Kind, held: Any) -> object:
    return await r.execute(delete(P(k)).where(P(k).id == min(own_ids(P(k)))))


@write("cascade_session_delete", CASCADE, "`session.delete(parent)`: the ORM cascade to children",
       prepare=load_first_parent)
async def _cascade_session(r: Runner, k: Kind, held: Any) -> object:
    await r.delete(held)
    return None


@write("hard_delete", CASCADE, "`sa_patterns.hard_delete(session, parent)`: a real DELETE with its "
       "cascade, of a parent that holds another tenant's child", prepare=load_first_parent,
       hard=True, refuses=TenantViolation)
async def _hard_delete(r: Runner, k: Kind, held: Any) -> object:
    await r.hard_delete(held)
    return None


@write("association_proxy_append", ASSOC, "`team.people.append(person)` through the association "
       "proxy (creates the association object)", prepare=load_team_links)
async def _assoc_append(r: Runner, k: Kind, held: Any) -> object:
    held.people.append(await r.get(Person, TENANT * 100 + 3))
    return None


@write("association_proxy_clear", ASSOC, "`team.people.clear()`: the association objects are "
       "orphans, deleted by cascade", prepare=load_team_links)
async def _assoc_clear(r: Runner, k: Kind, held: Any) -> object:
    held.people.clear()
    return None


# --- the legacy Query API and Session.bulk_* (sync only) ---


@write("query_update", ALL, "`session.query(Model).filter(...).update({...})`", sync_only=True)
async def _query_update(r: Runner, k: Kind, held: Any) -> object:
    return r.sync.query(k.root).filter(k.root.id.in_(ids(k.root))).update(
        {k.write_col: f"{r.tag}:q"}, synchronize_session=False
    )


@write("query_delete", ALL, "`session.query(Model).filter(...).delete()`", sync_only=True)
async def _query_delete(r: Runner, k: Kind, held: Any) -> object:
    return r.sync.query(k.root).filter(k.root.id.in_(ids(k.root))).delete(synchronize_session=False)


@write("bulk_insert_mappings", ALL, "`Session.bulk_insert_mappings(Model, [dicts])`", sync_only=True)
async def _bulk_insert(r: Runner, k: Kind, held: Any) -> object:
    r.sync.bulk_insert_mappings(inspect(k.root), [_new(r, k, 1), _new(r, k, 2)])
    return None


@write("bulk_insert_mappings_foreign", TENANT_KINDS, "`Session.bulk_insert_mappings()` with "
       "`tenant_id=<other tenant>`", sync_only=True, refuses=TenantViolation)
async def _bulk_insert_foreign(r: Runner, k: Kind, held: Any) -> object:
    r.sync.bulk_insert_mappings(inspect(k.root), [{**_new(r, k, 1), "tenant_id": FOREIGN}])
    return None


@write("bulk_update_mappings", ALL, "`Session.bulk_update_mappings(Model, [dicts])` naming every "
       "tenant's ids", sync_only=True)
async def _bulk_update(r: Runner, k: Kind, held: Any) -> object:
    r.sync.bulk_update_mappings(
        inspect(k.root), [{"id": i, k.write_col: f"{r.tag}:bulk{i}"} for i in ids(k.root)]
    )
    return None


@write("bulk_save_objects", ALL, "`Session.bulk_save_objects()` of a new object and objects "
       "detached from another tenant's session", prepare=load_roots_detached, foreign=True,
       sync_only=True, refuses=UnsupportedStatement)
async def _bulk_save(r: Runner, k: Kind, held: list[Any]) -> object:
    r.sync.bulk_save_objects([k.root(**_new(r, k, 1)), *held])
    return None


# === declarations refused before any statement ==============================================


@dataclass(frozen=True)
class Declaration:
    """A way to map tenant rows that the wall refuses when mappers configure."""

    name: str
    doc: str
    declare: Callable[[], registry]
    refuses: type[SAPatternsError]
    #: a fragment of the refusal's message (it names what is wrong)
    match: str


DECLARATIONS: dict[str, Declaration] = {}


def declaration(name: str, doc: str, refuses: type[SAPatternsError], match: str) -> Callable[
    [Callable[[], registry]], Callable[[], registry]
]:
    def register(declare: Callable[[], registry]) -> Callable[[], registry]:
        DECLARATIONS[name] = Declaration(name, doc, declare, refuses, match)
        return declare

    return register


@declaration("secondary", "`relationship(secondary=...)` over a tenant + soft-delete link model",
             ConfigurationError, match="secondary=")
def _secondary() -> registry:
    """Returns the registry the classes went to; configuring it must raise."""

    class CfgBase(DeclarativeBase):
        pass

    class CfgTeam(TenantMixin, CfgBase):
        __tablename__ = "iso_cfg_teams"
        id: Mapped[int] = mapped_column(primary_key=True)
        people: Mapped[list[CfgPerson]] = relationship(secondary="iso_cfg_links")

    class CfgPerson(TenantMixin, CfgBase):
        __tablename__ = "iso_cfg_people"
        id: Mapped[int] = mapped_column(primary_key=True)

    class CfgLink(SoftDeleteMixin, TenantMixin, CfgBase):
        __tablename__ = "iso_cfg_links"
        id: Mapped[int] = mapped_column(primary_key=True)
        team_id: Mapped[int] = mapped_column(ForeignKey("iso_cfg_teams.id"))
        person_id: Mapped[int] = mapped_column(ForeignKey("iso_cfg_people.id"))

    return CfgBase.registry


# === cells =================================================================================


def applies(shape: Shape, kind: Kind) -> bool:
    """Whether ``shape`` runs on ``kind``: a variant in another declarative style (``like``)
    takes exactly the shapes of the kind it is a variant of."""
    return shape.applies(KINDS[kind.judged_as])


def cells() -> Iterator[Cell]:
    """Every shape × every kind it applies to × sync/async × tenant/no tenant."""
    for shape in SHAPES.values():
        for kind in KINDS.values():
            if not applies(shape, kind):
                continue
            for mode in ("sync",) if shape.sync_only else ("sync", "async"):
                for scope in ("tenant", "none"):
                    yield Cell(shape, kind, mode, scope)  # type: ignore[arg-type]


#: ``(shape, kind, mode, scope) -> reason`` of the cells that fail today; ``"*"`` matches any
#: kind, mode or scope. Each runs as ``xfail(strict=True)``: delete the entry when it XPASSes.
Key = tuple[str, str, str, str]
XFAIL: dict[Key, str] = {
}


#: Gaps seen on some SQLAlchemy versions only: (which versions, in words; the test; entries).
#: Each runs as a strict xfail on the versions it names, and as a plain cell on the others.
XFAIL_ON: list[tuple[str, Callable[[tuple[int, ...]], bool], dict[Key, str]]] = [
]

SQLALCHEMY = tuple(int(re.match(r"\d+", p).group()) for p in sqlalchemy.__version__.split(".")[:3])  # type: ignore[union-attr]


def matches(key: Key, cell: Cell) -> bool:
    """Whether an ``XFAIL`` key (``"*"`` for any kind, mode or scope) names ``cell``."""
    shape, kind, mode, scope = key
    return shape == cell.shape.name and all(
        want in ("*", got)
        for want, got in ((kind, cell.kind.name), (mode, cell.mode), (scope, cell.scope))
    )


def gaps(cell: Cell) -> list[tuple[str, str]]:
    """``(versions, reason)`` of every known gap of ``cell``, on any SQLAlchemy version
    (``versions`` is empty for a gap on every version)."""
    found = [("", reason) for key, reason in XFAIL.items() if matches(key, cell)]
    for label, _, entries in XFAIL_ON:
        found += [(label, reason) for key, reason in entries.items() if matches(key, cell)]
    return found


def xfail_reason(cell: Cell, version: tuple[int, ...] = SQLALCHEMY) -> str | None:
    """The reason ``cell`` is a strict xfail on ``version`` of SQLAlchemy, or None."""
    for key, reason in XFAIL.items():
        if matches(key, cell):
            return f"issue 20: {reason}"
    for label, applies, entries in XFAIL_ON:
        if applies(version):
            for key, reason in entries.items():
                if matches(key, cell):
                    return f"issue 20: {reason} ({label})"
    return None
