"""Soft delete: rows are marked ``deleted_at`` instead of removed, and every ORM read hides them.

How it works, in one place:

* **Reads.** :func:`loader_criteria` adds one ``with_loader_criteria(SoftDeleteMixin,
  deleted_at IS NULL, include_aliases=True)`` to every ORM statement. SQLAlchemy puts it in the
  WHERE of a top-level entity, in the ON clause of ``join()``/``outerjoin()`` (a LEFT JOIN stays
  a LEFT JOIN), in subqueries and EXISTS, in ORM bulk UPDATE, and it propagates to the lazy,
  selectin, subquery and joined loads the statement triggers. ``include_deleted=True`` on a
  statement adds a propagating marker instead, so that statement's loaders see deleted rows too.
* **ORM deletes.** ``before_flush`` turns ``session.delete(obj)`` of a soft-deletable object into
  an UPDATE of ``deleted_at``/``deleted_by``/``delete_batch`` (one per model, guarded by
  ``deleted_at IS NULL``); the delete cascade SQLAlchemy already computed is followed, and every row one operation takes down shares one ``delete_batch`` uuid,
  so :meth:`SoftDeleteMixin.restore` revives exactly those rows. After the flush the objects leave
  the session like deleted ones, so ``session.get()`` cannot hand them back.
* **Bulk deletes.** ORM ``delete(Model)`` becomes one ``UPDATE ... SET deleted_at`` (filtered to
  live rows), plus one set-based ``UPDATE`` per delete-cascade level. ``hard_delete=True`` (or
  :func:`hard_delete`) really deletes.
* **Schema.** :func:`soft_unique` is a unique index ``WHERE deleted_at IS NULL`` (``tenant_id``
  first when the table has one); ``__soft_delete_guard__ = True`` adds a trigger that turns a raw
  SQL ``DELETE`` into the soft delete. Both reach migrations through autogenerate.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime, timezone
from typing import Any, ClassVar, overload

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Index,
    Select,
    Table,
    Text,
    Uuid,
    and_,
    column,
    delete,
    event,
    exc,
    func,
    inspect,
    not_,
    null,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, Result
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import (
    InstanceState,
    Mapped,
    Mapper,
    ORMExecuteState,
    Session,
    UOWTransaction,
    attributes,
    mapped_column,
    object_session,
    with_loader_criteria,
)
from sqlalchemy.orm.collections import collection_adapter
from sqlalchemy.orm.interfaces import ORMOption, UserDefinedOption

from ._compat import conflict_update, is_orphan, note_joined_subclass, with_conflict_where
from ._joins import base_table
from ._mapping import each_relationship, own_table, refuse_sqlmodel, secondary_refusal, when_mapped
from .context import ACTOR_SETTING, StatementContext, current_actor
from .errors import ConfigurationError, ConflictError, TenantViolation
from .options import ALL_TENANTS, HARD_DELETE, INCLUDE_DELETED, flag, parameter_rows
from .pattern import Pattern
from .schema.objects import Function, Trigger, ident, qualified, quote, quote_literal
from .schema.registry import register
from .tenancy import table_criteria

__all__ = [
    "HARD_DELETE_SETTING",
    "PATTERN",
    "SoftDeleteMixin",
    "hard_delete",
    "soft_unique",
]

#: Transaction-local setting that lets a ``DELETE`` through the guard trigger.
HARD_DELETE_SETTING = "sa_patterns.hard_delete"

_SOFT_UNIQUE = "sa_patterns.soft_unique"
#: ``MetaData.info`` key: the keys of the tables soft-deletable models map
_SOFT_TABLES = "sa_patterns.soft_delete_tables"
_HARD = "sa_patterns.soft_delete.hard"  # session.info: states to really delete
_GONE = "sa_patterns.soft_delete.gone"  # session.info: objects soft-deleted by this flush


def _now() -> datetime:
    return datetime.now(timezone.utc)


class SoftDeleteMixin:
    """Rows of this model are soft-deleted: marked with ``deleted_at`` and hidden from ORM reads.

    ``__soft_delete_guard__ = True`` also installs a database trigger that turns a raw SQL
    ``DELETE`` into the soft delete (``SET LOCAL sa_patterns.hard_delete = 'on'`` to purge).
    """

    __soft_delete_guard__: ClassVar[bool] = False

    deleted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=None, nullable=True
    )
    #: who deleted the row: the actor in force (``actor_scope``/``session.info["actor_id"]``)
    deleted_by: Mapped[str | None] = mapped_column(Text, default=None, nullable=True)
    #: one id per delete operation, shared by the rows its cascade took down
    delete_batch: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None, nullable=True)

    def __init_subclass__(cls, **kw: Any) -> None:
        refuse_sqlmodel(cls, "SoftDeleteMixin")
        super().__init_subclass__(**kw)
        when_mapped(cls, _set_up)

    @hybrid_property
    def is_deleted(self) -> bool:
        """True for a soft-deleted row; in SQL, ``deleted_at IS NOT NULL``."""
        return self.deleted_at is not None

    @is_deleted.inplace.expression
    @classmethod
    def _is_deleted_expression(cls) -> ColumnElement[bool]:
        return cls.deleted_at.is_not(None)

    def soft_delete(self) -> None:
        """Mark this row deleted (and, at the next flush, its delete-cascade children).

        A no-op on a row that is already deleted: the first timestamp is kept.
        """
        if self.deleted_at is not None:
            return
        session = object_session(self)
        self.deleted_at = _now()
        self.deleted_by = current_actor(session)
        self.delete_batch = uuid.uuid4()

    def restore(self) -> None:
        """Undelete this row and every row its delete operation took down, at the next flush.

        Rows deleted separately (another ``delete_batch``) stay deleted. A no-op on a live row.
        If a live row took the row's ``soft_unique`` key meanwhile, the flush raises
        :class:`~sa_patterns.ConflictError` naming the columns and changes nothing.
        """
        if self.deleted_at is None:
            return
        self.deleted_at = None
        self.deleted_by = None
        self.delete_batch = None


# --------------------------------------------------------------------------------------------
# schema: soft_unique and the guard trigger


def soft_unique(*columns: str, name: str | None = None) -> Index:
    """A unique index over ``columns`` that ignores deleted rows (``WHERE deleted_at IS NULL``).

    Put it in ``__table_args__`` of a :class:`SoftDeleteMixin` model. When the table has a
    ``tenant_id`` column (``TenantMixin``), the index is built on ``(tenant_id, *columns)``.
    The default name is ``uq_<table>_<columns>_live``.
    """
    if not columns or not all(isinstance(c, str) and c for c in columns):
        raise ConfigurationError(
            "soft_unique() takes column names as strings, e.g. soft_unique('email')."
        )
    index = Index(
        name,
        *columns,
        unique=True,
        postgresql_where=column("deleted_at").is_(None),
        info={_SOFT_UNIQUE: {"columns": columns, "name": name}},
    )
    event.listen(index, "after_parent_attach", _check_soft_unique_table)
    return index


def _check_soft_unique_table(index: Index, table: Any) -> None:
    if isinstance(table, Table) and "deleted_at" not in table.c:
        raise ConfigurationError(
            f"soft_unique{index.info[_SOFT_UNIQUE]['columns']!r} on table {table.name!r}: the "
            "table has no deleted_at column. Add SoftDeleteMixin to the model, or use a plain "
            "UniqueConstraint."
        )


def _finish_soft_unique(table: Table) -> None:
    """Replace each ``soft_unique`` placeholder by the real index, now that the table exists."""
    for index in list(table.indexes):
        spec = index.info.get(_SOFT_UNIQUE)
        if spec is None or spec.get("built"):
            continue
        names: tuple[str, ...] = tuple(spec["columns"])
        if "tenant_id" in table.c and "tenant_id" not in names:
            names = ("tenant_id", *names)
        table.indexes.discard(index)
        Index(
            spec["name"] or ident(f"uq_{table.name}", f"{'_'.join(spec['columns'])}_live"),
            *(table.c[n] for n in names),
            unique=True,
            postgresql_where=table.c.deleted_at.is_(None),
            info={_SOFT_UNIQUE: {**spec, "built": True}},
        )


def _guard_objects(table: Table) -> tuple[Function, Trigger]:
    pk = [c.name for c in table.primary_key.columns]
    if not pk:
        raise ConfigurationError(
            f"__soft_delete_guard__ on {table.name!r} needs a primary key to find the row."
        )
    match = " AND ".join(f"{quote(c)} = OLD.{quote(c)}" for c in pk)
    name = ident(table.name, "soft_delete_guard")
    setting = quote_literal(HARD_DELETE_SETTING)
    actor = quote_literal(ACTOR_SETTING)
    # identifiers go through the dialect's quoting; there are no values (DDL)
    body = (
        "BEGIN\n"  # noqa: S608
        f"  IF coalesce(current_setting({setting}, true), '') = 'on' THEN\n"
        "    RETURN OLD;\n"
        "  END IF;\n"
        f"  UPDATE {qualified(table.schema, table.name)}\n"
        "     SET deleted_at = now(),\n"
        f"         deleted_by = NULLIF(current_setting({actor}, true), ''),\n"
        "         delete_batch = gen_random_uuid()\n"
        f"   WHERE {match} AND deleted_at IS NULL;\n"
        "  RETURN NULL;\n"
        "END;"
    )
    function = Function(table.schema, name, returns="trigger", body=body)
    trigger = Trigger(
        table.schema,
        table.name,
        name,
        when="BEFORE DELETE",
        function=f"{qualified(table.schema, name)}()",
    )
    return function, trigger


def _set_up(mapper: Mapper[Any]) -> None:
    """A soft-deletable class is mapped (each mapped class, subclasses included)."""
    event.listen(mapper, "mapper_configured", _check_cascades)
    each_relationship(mapper, _REFUSE_SECONDARY)
    table = own_table(mapper)
    if table is None:
        return  # single-table inheritance: the parent did the work
    if "deleted_at" not in table.c:
        if mapper.inherits is None:
            raise ConfigurationError(
                f"{mapper.class_.__name__} is a SoftDeleteMixin model, but its table "
                f"{table.name!r} has no deleted_at column (an imperative mapping or an explicit "
                "__table__ does not get the mixin's columns). Add deleted_at, deleted_by and "
                "delete_batch columns to the table, or let declarative create it."
            )
        note_joined_subclass()  # joined inheritance: the parent's table holds deleted_at
        return
    table.metadata.info.setdefault(_SOFT_TABLES, set()).add(table.key)
    _finish_soft_unique(table)
    if mapper.class_.__soft_delete_guard__:
        register(table.metadata, *_guard_objects(table))


def _check_cascades(mapper: Mapper[Any], class_: type[Any]) -> None:
    for rel in mapper.relationships:
        if "delete" in rel.cascade and not issubclass(rel.mapper.class_, SoftDeleteMixin):
            raise ConfigurationError(
                f"{class_.__name__}.{rel.key} cascades deletes to {rel.mapper.class_.__name__}, "
                "which is not soft-deletable: soft-deleting the parent would really delete its "
                "children, and restore() could not bring them back. Add SoftDeleteMixin to "
                f"{rel.mapper.class_.__name__}, or remove 'delete' from the relationship's "
                "cascade (use ON DELETE CASCADE with passive_deletes for hard deletes)."
            )


_REFUSE_SECONDARY = secondary_refusal(
    "deleted_at",
    "soft-deleted links would still show in the collection, and removing an item would DELETE "
    "the link row for good",
    "a SoftDeleteMixin model with a many-to-one relationship to each side, which soft delete "
    "filters",
    "docs/soft-delete.md",
)


def _soft(obj: object) -> bool:
    return isinstance(obj, SoftDeleteMixin)


# --------------------------------------------------------------------------------------------
# reads


class _Decided(UserDefinedOption):
    """Carried to a statement's loaders: soft-delete filtering was decided at the top."""

    propagate_to_loaders = True

    def __init__(self, include_deleted: bool) -> None:
        super().__init__(include_deleted)


_LIVE = with_loader_criteria(
    SoftDeleteMixin,
    lambda cls: cls.deleted_at.is_(None),
    include_aliases=True,
)
_FILTERED: tuple[ORMOption, ...] = (_LIVE, _Decided(False))
_UNFILTERED: tuple[ORMOption, ...] = (_Decided(True),)


def loader_criteria(context: StatementContext) -> Iterable[ORMOption]:
    """The soft-delete options for one ORM statement (composed by :func:`sa_patterns.install`)."""
    state = context.state
    if state.is_column_load or state.is_relationship_load:
        for opt in state.user_defined_options:
            if isinstance(opt, _Decided):
                return ()  # the parent statement's criteria (or opt-out) came along
    if context.include_deleted or (state.is_delete and context.hard_delete):
        return _UNFILTERED
    return _FILTERED


def from_criteria(context: StatementContext, from_: Any) -> list[ColumnElement[bool]]:
    """``deleted_at IS NULL`` for a soft-deletable table (or an alias of one) inside an explicit
    join, where loader criteria do not reach (see :mod:`sa_patterns._joins`)."""
    if context.include_deleted:
        return []
    table = base_table(from_)
    if table is None or table.key not in table.metadata.info.get(_SOFT_TABLES, ()):
        return []
    return [from_.c.deleted_at.is_(None)]


# --------------------------------------------------------------------------------------------
# bulk statements


def _set_hard_delete(connection: Connection, on: bool) -> None:
    connection.execute(
        text("SELECT set_config(:n, :v, true)"), {"n": HARD_DELETE_SETTING, "v": "on" if on else ""}
    )


def _refresh(state: ORMExecuteState) -> None:
    """SQLAlchemy leaves ``with_loader_criteria`` out of refreshes of expired objects; add the
    filter there too, so an object soft-deleted elsewhere behaves like one deleted elsewhere
    (``session.get()`` returns None, attribute access raises ``ObjectDeletedError``)."""
    if flag(state, INCLUDE_DELETED):
        return
    for opt in state.user_defined_options:
        if isinstance(opt, _Decided) and opt.payload:
            return  # loaded with include_deleted=True
    mapper = state.bind_mapper
    if mapper is None or not issubclass(mapper.class_, SoftDeleteMixin):
        return
    if isinstance(state.statement, Select):
        state.statement = state.statement.where(mapper.columns["deleted_at"].is_(None))


def _do_orm_execute(state: ORMExecuteState) -> Result[Any] | None:
    if state.is_column_load:
        _refresh(state)
        return None
    if state.is_delete:
        return _bulk_delete(state)
    if state.is_update:
        _live_rows_by_primary_key(state)
    elif state.is_insert:
        _live_rows_on_conflict(state)
    return None


def _live_rows_on_conflict(state: ORMExecuteState) -> None:
    """``INSERT … ON CONFLICT DO UPDATE``: a soft-deleted row is hidden, so an upsert onto its
    key leaves it as it is (and does not return it) instead of overwriting it."""
    if flag(state, INCLUDE_DELETED) or conflict_update(state.statement) is None:
        return
    mapper = state.bind_mapper
    if mapper is not None and issubclass(mapper.class_, SoftDeleteMixin):
        table = mapper.columns["deleted_at"].table
        state.statement = with_conflict_where(state.statement, table.c.deleted_at.is_(None))


def _live_rows_by_primary_key(state: ORMExecuteState) -> None:
    """ORM bulk UPDATE by primary key (a list of parameter dicts) ignores loader criteria: a
    soft-deleted row is hidden, so ``deleted_at IS NULL`` goes into its WHERE clause directly
    (``include_deleted=True`` writes deleted rows on purpose)."""
    if parameter_rows(state) is None or flag(state, INCLUDE_DELETED):
        return
    entity = state.statement.entity_description.get("entity")  # type: ignore[attr-defined]
    if isinstance(entity, type) and issubclass(entity, SoftDeleteMixin):
        state.statement = state.statement.where(  # type: ignore[attr-defined]
            entity.deleted_at.is_(None)
        )
        state.update_execution_options(synchronize_session=None)


def _bulk_delete(state: ORMExecuteState) -> Result[Any] | None:
    entity = state.statement.entity_description.get("entity")  # type: ignore[attr-defined]
    if not (isinstance(entity, type) and issubclass(entity, SoftDeleteMixin)):
        return None
    session = state.session
    if flag(state, HARD_DELETE):
        if not getattr(entity, "__soft_delete_guard__", False):
            return None
        connection = session.connection(bind_arguments=state.bind_arguments)
        _set_hard_delete(connection, True)
        try:
            return state.invoke_statement()
        finally:
            _set_hard_delete(connection, False)
    delete_stmt: Any = state.statement
    batch = uuid.uuid4()
    soft = update(entity).values(
        deleted_at=_now(), deleted_by=current_actor(session), delete_batch=batch
    )
    if delete_stmt.whereclause is not None:
        soft = soft.where(delete_stmt.whereclause)
    # already deleted rows keep their first delete (and its batch, for restore()); loader
    # criteria say the same, but do not reach an UPDATE by primary key
    soft = soft.where(entity.deleted_at.is_(None))
    soft = soft.execution_options(**delete_stmt.get_execution_options())
    if parameter_rows(state) is not None:
        # SQLAlchemy cannot synchronize objects for a by-primary-key UPDATE with extra WHERE
        # criteria; the objects this batch deleted leave the session below
        soft = soft.execution_options(synchronize_session=None)
    if delete_stmt._returning:  # keep delete(...).returning(...) working
        soft = soft.returning(*delete_stmt._returning)
    result = state.invoke_statement(statement=soft)
    root = inspect(entity, raiseerr=True)
    touched = {root}
    _cascade_bulk(session, root, batch, touched, admin=flag(state, ALL_TENANTS))
    for mapper in touched:
        _expunge_batch(session, mapper.class_, batch)
    return result


def _cascade_bulk(
    session: Session,
    mapper: Mapper[Any],
    batch: uuid.UUID,
    touched: set[Mapper[Any]],
    *,
    admin: bool,
) -> None:
    """Follow delete-cascade relationships set-based: one UPDATE per relationship level, children
    of the rows this batch deleted join the batch (so ``restore()`` revives them too). A child
    of a tenant model must belong to the tenant in scope: a foreign key alone never reaches
    across the tenant wall."""
    parent = mapper.columns["deleted_at"].table
    for target, table, local, remote in _soft_cascades(mapper):
        if any(c.table is not parent for c in local):
            continue
        deleted_parents = select(*local).where(parent.c.delete_batch == batch)
        result = session.connection(bind_arguments={"mapper": target}).execute(
            update(table)
            .where(table.c.deleted_at.is_(None), tuple_(*remote).in_(deleted_parents))
            .where(*table_criteria(session, table, admin=admin))
            .values(deleted_at=_now(), deleted_by=current_actor(session), delete_batch=batch)
        )
        if result.rowcount:
            touched.add(target)
            # ends: each UPDATE takes live rows
            _cascade_bulk(session, target, batch, touched, admin=admin)


def _expunge_batch(session: Session, entity: type[Any], batch: uuid.UUID) -> None:
    """Objects a bulk statement soft-deleted leave the session, as deleted objects do.

    The ORM cannot say which objects matched (their ``deleted_at`` may not be loaded), so ask
    the database, once, and only when the identity map holds objects of that class at all.
    """
    held = [o for o in session.identity_map.values() if isinstance(o, entity)]
    if not held:
        return
    mapper = inspect(entity)
    by_key = {inspect(o).identity: o for o in held}
    keys = [k for k in by_key if k is not None]
    pk = tuple_(*mapper.primary_key)
    gone = session.execute(
        select(*mapper.primary_key)
        .where(pk.in_(keys), mapper.columns["delete_batch"] == batch)
        .execution_options(include_deleted=True)
    )
    for row in gone:
        session.expunge(by_key[tuple(row)])


# --------------------------------------------------------------------------------------------
# the unit of work


@overload
def hard_delete(session: AsyncSession, obj: object) -> Awaitable[None]: ...
@overload
def hard_delete(session: Session, obj: object) -> None: ...
def hard_delete(session: Session | AsyncSession, obj: object) -> Awaitable[None] | None:
    """Really ``DELETE`` ``obj`` (and its delete cascade) at the next flush.

    With an ``AsyncSession`` it returns an awaitable: ``await sa_patterns.hard_delete(s, obj)``.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info.setdefault(_HARD, set()).add(inspect(obj))
    if isinstance(session, AsyncSession):
        return session.delete(obj)
    session.delete(obj)
    return None


def _history_newly(state: InstanceState[Any], key: str) -> tuple[object, object] | None:
    """``(old, new)`` when ``key`` changed in this flush, else None."""
    hist = state.attrs[key].history
    if not hist.added:
        return None
    old = hist.deleted[0] if hist.deleted else None
    return old, hist.added[0]


def _cascade(state: InstanceState[Any]) -> Iterator[InstanceState[Any]]:
    for _obj, _mapper, child, _dict in state.mapper.cascade_iterator("delete", state):
        yield child


def before_flush(session: Session, flush_context: UOWTransaction, instances: object) -> None:
    # objects, not states: a soft-deleted object nobody else references must stay alive
    gone: list[Any] = []
    session.info[_GONE] = gone
    # kept until the flush succeeds: a failed flush retried later still deletes for real
    hard: set[InstanceState[Any]] = set(session.info.get(_HARD, ()))
    for state in list(hard):
        hard.update(_cascade(state))

    # roots of this flush's soft deletes: session.delete(), orphans of a delete-orphan
    # cascade (the flush would DELETE them), and soft_delete()/deleted_at set
    orphans = _soft_orphans(session)
    deleting = [inspect(o) for o in session.deleted if _soft(o)] + orphans
    deleting = [s for s in deleting if s not in hard]
    marked: list[InstanceState[Any]] = []
    restored: list[tuple[InstanceState[Any], uuid.UUID]] = []
    for obj in session.dirty:
        if not _soft(obj):
            continue
        st = inspect(obj)
        change = _history_newly(st, "deleted_at")
        if change is None:
            continue
        old, new = change
        if old is None and new is not None:
            marked.append(st)
        elif old is not None and new is None:
            batch = st.attrs.delete_batch.history.deleted
            restored.append((st, batch[0] if batch else st.dict.get("delete_batch")))

    if hard:
        orm_deletes = {(st.mapper.base_mapper, tuple(st.identity or ())) for st in hard}
        opened: list[Connection] = session.info.setdefault(_HARD + ".reset", [])
        for st in hard:
            connection = session.connection(bind_arguments={"mapper": st.mapper})
            if connection not in opened:
                _set_hard_delete(connection, True)  # let the DELETEs through guard triggers
                opened.append(connection)
            if _soft(st.obj()) and st.identity is not None:
                _purge_hidden(
                    session, connection, st.mapper, [tuple(st.identity)], deleted_only=True,
                    skip=orm_deletes,
                )

    for st, batch in restored:
        _restore(session, st, batch)

    candidates = deleting + marked
    if not candidates:
        return
    below: dict[InstanceState[Any], InstanceState[Any]] = {}
    for st in candidates:
        for child in _cascade(st):
            if child is not st:
                below.setdefault(child, st)
    actor = current_actor(session)
    now = _now()
    done: set[InstanceState[Any]] = set()
    pending: dict[tuple[Mapper[Any], tuple[Any, ...]], list[Any]] = {}
    # roots first; then whatever a cascade cycle left (two objects cascading to each other):
    # nothing soft-deletable may fall through to a real DELETE
    roots = [st for st in candidates if st not in below]
    for root in roots + [st for st in candidates if st in below]:
        if root in done:
            continue
        batch = (root.obj().delete_batch if root in marked else None) or uuid.uuid4()
        for st in [root, *_cascade(root)]:
            obj = st.obj()
            if st in done or st in hard or not _soft(obj):
                continue
            done.add(st)
            if obj in session.deleted:
                session.add(obj)  # cancel the DELETE; our UPDATE replaces it
            if st in marked:  # soft_delete() or deleted_at set by hand: keep its values
                values = (obj.deleted_at, obj.deleted_by, batch)
            elif obj.deleted_at is not None:
                continue  # already deleted: a no-op that keeps the first timestamp
            else:
                values = (now, actor, batch)
            pending.setdefault((st.mapper.base_mapper, values), []).append(obj)
            gone.append(obj)
    for (mapper, values), states in pending.items():
        _write_soft_delete(session, mapper, values, states)
    # They leave the session like deleted objects; ones with other changes still to write go
    # after the flush (a flush with nothing left to write never reaches after_flush_postexec).
    for obj in list(gone):
        if obj not in session:
            gone.remove(obj)  # already expunged along an expunge cascade
        elif not session.is_modified(obj) or inspect(obj) in orphans:
            # an orphan's own change (its parent reference cleared) is the removal itself: it
            # leaves now, or the flush would still DELETE it
            session.expunge(obj)
            gone.remove(obj)


def _soft_orphans(session: Session) -> list[InstanceState[Any]]:
    """Soft-deletable objects a ``delete-orphan`` cascade would delete at this flush: removed
    from a parent's collection (``team.members.clear()``, an association proxy's ``remove``)
    and held by no other parent. SQLAlchemy decides orphans inside the flush, after
    ``before_flush``; they are found here the same way, to be soft-deleted instead, and the
    parent's collection forgets their removal (its other changes kept), so the flush neither
    deletes them nor nulls their foreign key."""
    found: list[InstanceState[Any]] = []
    for parent in list(session.dirty):
        parent_state = inspect(parent)
        for rel in parent_state.mapper.relationships:
            if not rel.cascade.delete_orphan or not issubclass(rel.mapper.class_, SoftDeleteMixin):
                continue
            history = parent_state.attrs[rel.key].history
            orphans = [
                inspect(child) for child in history.deleted
                if child is not None and inspect(child).persistent and is_orphan(inspect(child))
            ]
            if not orphans or not rel.uselist:
                continue
            found.extend(s for s in orphans if s not in found)
            added = list(history.added)
            attributes.set_committed_value(parent, rel.key, list(history.unchanged))
            adapter = collection_adapter(getattr(parent, rel.key))
            for child in added:
                adapter.append_with_event(child)
    return found


_MARK = ("deleted_at", "deleted_by", "delete_batch")


def _write_soft_delete(
    session: Session, mapper: Mapper[Any], values: tuple[Any, ...], objects: list[Any]
) -> None:
    """One ``UPDATE ... WHERE pk IN (...) AND deleted_at IS NULL RETURNING ...`` per group.

    The ``deleted_at IS NULL`` guard is re-checked after a row lock wait, so when two
    transactions delete the same row the first delete wins and keeps its timestamp, actor and
    batch; the objects then show what the row holds.
    """
    table = mapper.columns["deleted_at"].table
    pk = list(mapper.primary_key)
    marks = [table.c[name] for name in _MARK]
    by_key = {tuple(inspect(obj).identity or ()): obj for obj in objects}
    connection = session.connection(bind_arguments={"mapper": mapper})
    result = connection.execute(
        update(table)
        .where(tuple_(*pk).in_(list(by_key)), table.c.deleted_at.is_(None))
        .values(dict(zip(_MARK, values, strict=True)))
        .returning(*pk, *marks)
    )
    rows = {tuple(r[: len(pk)]): tuple(r[len(pk) :]) for r in result}
    missing = [k for k in by_key if k not in rows]
    if missing:  # deleted meanwhile by another transaction: show the first delete's marks
        found = connection.execute(select(*pk, *marks).where(tuple_(*pk).in_(missing)))
        rows.update({tuple(r[: len(pk)]): tuple(r[len(pk) :]) for r in found})
    for key, obj in by_key.items():
        row = rows.get(key)
        if row is not None:
            for name, value in zip(_MARK, row, strict=True):
                attributes.set_committed_value(obj, name, value)


def _restore(session: Session, st: InstanceState[Any], batch: object) -> None:
    """Undelete ``st``'s row and the rows its delete operation cascaded to, set-based."""
    mapper = st.mapper
    table = mapper.columns["deleted_at"].table
    pk = tuple(st.identity or ())
    connection = session.connection(bind_arguments={"mapper": mapper})
    savepoint = connection.begin_nested()
    try:
        cleared = {"deleted_at": None, "deleted_by": None, "delete_batch": None}
        connection.execute(
            update(table)
            .where(tuple_(*mapper.primary_key) == tuple_(*pk), table.c.deleted_at.is_not(None))
            .values(cleared)
        )
        if batch is not None:
            _restore_children(session, connection, mapper, [pk], batch, set())
        savepoint.commit()
    except exc.IntegrityError as error:
        savepoint.rollback()
        for key in ("deleted_at", "deleted_by", "delete_batch"):
            hist = st.attrs[key].history
            old = hist.deleted[0] if hist.deleted else st.committed_state.get(key)
            attributes.set_committed_value(st.obj(), key, old)
        raise _conflict(error, mapper) from error
    # the row now holds what the object says: nothing left for the flush to write
    for key in ("deleted_at", "deleted_by", "delete_batch"):
        attributes.set_committed_value(st.obj(), key, None)


def _restore_children(
    session: Session,
    connection: Connection,
    mapper: Mapper[Any],
    rows: Sequence[tuple[Any, ...]],
    batch: object,
    seen: set[tuple[Mapper[Any], tuple[Any, ...]]],
) -> None:
    for target, table, local, remote in _soft_cascades(mapper):
        parent_keys = _column_values(connection, mapper, rows, local)
        if not parent_keys:
            continue
        child_pk = list(target.primary_key)
        result = connection.execute(
            update(table)
            .where(table.c.delete_batch == batch, tuple_(*remote).in_(parent_keys))
            .where(*table_criteria(session, table))
            .values(deleted_at=None, deleted_by=None, delete_batch=null())
            .returning(*child_pk)
        )
        child_rows = [tuple(r) for r in result]
        fresh = [r for r in child_rows if (target, r) not in seen]
        seen.update((target, r) for r in fresh)
        for r in fresh:
            obj = session.identity_map.get(target.identity_key_from_primary_key(r))
            if obj is not None:
                session.expire(obj)
        if fresh:
            _restore_children(session, connection, target, fresh, batch, seen)


def _soft_cascades(mapper: Mapper[Any]) -> Iterator[tuple[Mapper[Any], Table, list[Any], list[Any]]]:
    """``(child mapper, child table, local columns, remote columns)`` of each delete-cascade
    relationship to a soft-deletable class that SQL can follow on one table."""
    for rel in mapper.relationships:
        if "delete" not in rel.cascade or rel.secondary is not None:
            continue
        target = rel.mapper
        if not issubclass(target.class_, SoftDeleteMixin):
            continue
        table = target.columns["deleted_at"].table
        if not isinstance(table, Table):
            continue
        pairs = list(rel.local_remote_pairs or ())
        if any(rc.table is not table for _, rc in pairs):
            continue  # joined inheritance across tables: left to the ORM
        yield target, table, [lc for lc, _ in pairs], [rc for _, rc in pairs]


def _purge_hidden(
    session: Session,
    connection: Connection,
    mapper: Mapper[Any],
    rows: Sequence[tuple[Any, ...]],
    *,
    deleted_only: bool,
    skip: AbstractSet[tuple[Mapper[Any], tuple[Any, ...]]] = frozenset(),
) -> None:
    """Really delete the children a hard delete cannot see: the ORM's cascade loads only live
    rows, and a soft-deleted child would otherwise block (or dangle from) its parent's DELETE.
    Only the tenant's own: another tenant's child blocks the DELETE instead of being purged."""
    for target, table, local, remote in _soft_cascades(mapper):
        parent_keys = _column_values(connection, mapper, rows, local)
        if not parent_keys:
            continue
        where: ColumnElement[bool] = tuple_(*remote).in_(parent_keys)
        scope = table_criteria(session, table)
        if scope:
            foreign = connection.execute(
                select(func.count()).select_from(table).where(where, not_(and_(*scope)))
            ).scalar_one()
            if foreign:
                raise TenantViolation(
                    f"hard_delete() of {mapper.class_.__name__}: {foreign} row(s) of "
                    f"{target.class_.__name__} belonging to another tenant reference it; they "
                    "are not this tenant's to purge. Nothing was deleted."
                )
        if deleted_only:
            where = where & table.c.deleted_at.is_not(None)
        where = and_(where, *scope)
        pk = list(target.primary_key)
        found = [tuple(r) for r in connection.execute(select(*pk).where(where))]
        # children the ORM loaded are deleted by the flush itself
        children = [r for r in found if (target.base_mapper, r) not in skip]
        if children:
            _purge_hidden(session, connection, target, children, deleted_only=False, skip=skip)
            connection.execute(delete(table).where(tuple_(*pk).in_(children)))


def _column_values(
    connection: Connection,
    mapper: Mapper[Any],
    rows: Sequence[tuple[Any, ...]],
    cols: Sequence[Any],
) -> list[tuple[Any, ...]]:
    if list(cols) == list(mapper.primary_key):
        return list(rows)
    result = connection.execute(
        select(*cols).where(tuple_(*mapper.primary_key).in_(rows))
    )
    return [tuple(r) for r in result]


def _conflict(error: exc.IntegrityError, mapper: Mapper[Any]) -> Exception:
    diag = getattr(error.orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate != "23505":
        return error
    columns: tuple[str, ...] = ()
    table_name = None
    for table in mapper.tables:
        for index in getattr(table, "indexes", ()):
            if index.name == constraint:
                columns = tuple(c.name for c in index.columns)
                table_name = table.name
    where = f" on {table_name}({', '.join(columns)})" if columns else ""
    return ConflictError(
        f"restore() of {mapper.class_.__name__} would duplicate a live row{where} "
        f"(constraint {constraint!r}). Nothing was restored. Soft-delete or change the live row "
        "holding that key first, or change this row's key before restoring it.",
        constraint=constraint,
        table=table_name,
        columns=columns,
        sqlstate=sqlstate,
    )


def after_flush(session: Session, flush_context: UOWTransaction) -> None:
    for connection in session.info.pop(_HARD + ".reset", ()):
        _set_hard_delete(connection, False)


def after_flush_postexec(session: Session, flush_context: UOWTransaction) -> None:
    session.info.pop(_HARD, None)
    # soft-deleted objects leave the session like deleted ones: session.get() can't return them
    for obj in session.info.pop(_GONE, ()):
        if obj in session:
            session.expunge(obj)


def _bulk_check(session: Session, method: str, mapper: Mapper[Any]) -> bool:
    """``bulk_update_mappings()`` skips every session hook, so deleted rows would be written:
    mappings of a soft-deletable model go through the scoped ``execute(update(...), rows)``."""
    return method == "bulk_update_mappings" and issubclass(mapper.class_, SoftDeleteMixin)


#: Composed by :func:`sa_patterns.install`.
PATTERN = Pattern(
    "soft_delete",
    listeners=(
        ("do_orm_execute", _do_orm_execute),
        ("before_flush", before_flush),
        ("after_flush", after_flush),
        ("after_flush_postexec", after_flush_postexec),
    ),
    loader_criteria=loader_criteria,
    from_criteria=from_criteria,
    bulk_check=_bulk_check,
)
