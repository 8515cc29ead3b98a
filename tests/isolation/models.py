"""The models of the isolation matrix and their deliberately inconsistent data.

Every model kind the ORM wall must cover, on a fresh ``DeclarativeBase`` (tables ``iso_*``),
and the tenant + soft-delete parent/child pair again in the other declarative styles the mixins
support: the legacy ``declarative_base()`` and ``registry.mapped``, each on its own registry and
``MetaData`` (:data:`METADATAS`), seeded with the same rows (:func:`parents_and_children`) and
judged as the ``DeclarativeBase`` pair (``Kind.like``).
Foreign keys are plain single-column keys on purpose: a composite tenant foreign key would
forbid the cross-tenant rows the matrix needs (a child of tenant 2 under a parent of tenant 1).

Every text value carries its owner in a tag, ``t<tenant>:`` (``t*:`` for rows of a table
without tenants), and ``:dead`` when the row is soft-deleted, so the oracle can tell where any
string that reaches the caller, or any row a write produced, came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ForeignKey, MetaData, String, Table
from sqlalchemy.ext.associationproxy import AssociationProxy, association_proxy
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    declarative_base,
    mapped_column,
    registry,
    relationship,
)
from sqlalchemy.orm.attributes import InstrumentedAttribute

from sa_patterns import SoftDeleteMixin, TenantMixin

#: The tenant the matrix runs as, a foreign tenant whose objects it holds, and a third one.
TENANT, FOREIGN, THIRD = 1, 2, 3
TENANTS = (TENANT, FOREIGN, THIRD)
#: Ids of rows a shape creates start here (seeded ids are ``tenant * 100 + n``).
NEW_ID = 9000


class Base(AsyncAttrs, DeclarativeBase):
    pass


# --- plain TenantMixin ------------------------------------------------------------------


class Plain(TenantMixin, Base):
    __tablename__ = "iso_plain"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(80))


class Owner(TenantMixin, Base):
    """The parent of the two inheritance hierarchies."""

    __tablename__ = "iso_owners"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(80))
    docs: Mapped[list[Doc]] = relationship(back_populates="owner")
    items: Mapped[list[Item]] = relationship(back_populates="owner")


# --- TenantMixin + SoftDeleteMixin, parent and child ------------------------------------


class Parent(SoftDeleteMixin, TenantMixin, Base):
    __tablename__ = "iso_parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(80))
    children: Mapped[list[Child]] = relationship(
        back_populates="parent", cascade="all, delete-orphan"
    )


class Child(SoftDeleteMixin, TenantMixin, Base):
    __tablename__ = "iso_children"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("iso_parents.id"), index=True)
    label: Mapped[str] = mapped_column(String(80))
    parent: Mapped[Parent | None] = relationship(back_populates="children")


# --- joined-table inheritance of a tenant model ------------------------------------------


class Doc(TenantMixin, Base):
    __tablename__ = "iso_docs"
    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("iso_owners.id"), index=True)
    label: Mapped[str] = mapped_column(String(80))
    owner: Mapped[Owner | None] = relationship(back_populates="docs")
    __mapper_args__ = {"polymorphic_on": "type", "polymorphic_identity": "doc"}


class Report(Doc):
    __tablename__ = "iso_reports"
    id: Mapped[int] = mapped_column(ForeignKey("iso_docs.id"), primary_key=True)
    summary: Mapped[str] = mapped_column(String(80))
    __mapper_args__ = {"polymorphic_identity": "report"}


# --- single-table inheritance of a tenant model ------------------------------------------


class Item(TenantMixin, Base):
    __tablename__ = "iso_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("iso_owners.id"), index=True)
    label: Mapped[str] = mapped_column(String(80))
    owner: Mapped[Owner | None] = relationship(back_populates="items")
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "item"}


class Special(Item):
    __mapper_args__ = {"polymorphic_identity": "special"}


# --- an association object (tenant + soft delete) between two tenant models -------------


class Team(TenantMixin, Base):
    __tablename__ = "iso_teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(80))
    memberships: Mapped[list[Membership]] = relationship(
        back_populates="team", cascade="all, delete-orphan"
    )
    # The collection of people, through the association object (a ``secondary=`` relationship
    # over a tenant table is refused when mappers configure: test_isolation_declarations.py).
    people: AssociationProxy[list[Person]] = association_proxy(
        "memberships", "person", creator=lambda person: Membership(person=person)
    )


class Person(TenantMixin, Base):
    __tablename__ = "iso_people"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(80))


class Membership(SoftDeleteMixin, TenantMixin, Base):
    __tablename__ = "iso_memberships"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("iso_teams.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("iso_people.id"), index=True)
    # nullable: a link the association proxy creates has no label
    label: Mapped[str | None] = mapped_column(String(80))
    team: Mapped[Team] = relationship(back_populates="memberships")
    person: Mapped[Person] = relationship()


# --- soft delete without tenants -----------------------------------------------------


class Folder(SoftDeleteMixin, Base):
    __tablename__ = "iso_folders"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(80))
    notes: Mapped[list[Note]] = relationship(back_populates="folder", cascade="all, delete-orphan")


class Note(SoftDeleteMixin, Base):
    __tablename__ = "iso_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    folder_id: Mapped[int | None] = mapped_column(ForeignKey("iso_folders.id"), index=True)
    label: Mapped[str] = mapped_column(String(80))
    folder: Mapped[Folder | None] = relationship(back_populates="notes")


# --- where INSERT ... FROM SELECT copies to: no tenant, no soft delete ----------------


class Sink(Base):
    __tablename__ = "iso_sink"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(200))


# --- the same pair, declared with the legacy declarative_base() ----------------------------

LegacyBase: Any = declarative_base(metadata=MetaData(), name="LegacyBase")


class LegacyParent(SoftDeleteMixin, TenantMixin, AsyncAttrs, LegacyBase):
    __tablename__ = "iso_legacy_parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(80))
    children: Mapped[list[LegacyChild]] = relationship(
        back_populates="parent", cascade="all, delete-orphan"
    )


class LegacyChild(SoftDeleteMixin, TenantMixin, AsyncAttrs, LegacyBase):
    __tablename__ = "iso_legacy_children"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("iso_legacy_parents.id"), index=True)
    label: Mapped[str] = mapped_column(String(80))
    parent: Mapped[LegacyParent | None] = relationship(back_populates="children")


# --- the same pair, declared with the registry.mapped decorator ----------------------------

mapped_registry = registry(metadata=MetaData())


@mapped_registry.mapped
class MappedParent(SoftDeleteMixin, TenantMixin, AsyncAttrs):
    __tablename__ = "iso_mapped_parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(80))
    children: Mapped[list[MappedChild]] = relationship(
        back_populates="parent", cascade="all, delete-orphan"
    )


@mapped_registry.mapped
class MappedChild(SoftDeleteMixin, TenantMixin, AsyncAttrs):
    __tablename__ = "iso_mapped_children"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("iso_mapped_parents.id"), index=True)
    label: Mapped[str] = mapped_column(String(80))
    parent: Mapped[MappedParent | None] = relationship(back_populates="children")


#: The tenant + soft-delete parent/child pairs, one per declarative style, seeded alike.
PAIRS: tuple[tuple[type[Any], type[Any]], ...] = (
    (Parent, Child), (LegacyParent, LegacyChild), (MappedParent, MappedChild),
)

#: Every ``MetaData`` of the matrix: the ``DeclarativeBase``'s, then one per other style.
METADATAS: tuple[MetaData, ...] = (Base.metadata, LegacyBase.metadata, mapped_registry.metadata)


# --- model kinds ---------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of model the matrix crosses every shape with.

    ``root`` is the entity single-model shapes read and write; ``parent``/``child`` with the
    one-to-many ``children`` and many-to-one ``parent_of`` relationships serve the relationship
    shapes; ``sub`` is the subclass of a polymorphic ``child``.
    """

    name: str
    doc: str
    tenant: bool
    soft: bool
    root: type[Any]
    parent: type[Any] | None = None
    child: type[Any] | None = None
    children: InstrumentedAttribute[Any] | None = None
    parent_of: InstrumentedAttribute[Any] | None = None
    sub: type[Any] | None = None
    #: the child's foreign key column to the parent (attribute name)
    fk: str | None = None
    #: the column write shapes set: ``root``'s own table's (an ORM UPDATE writes one table)
    write_col: str = "label"
    #: extra values a new ``root`` row needs (foreign keys to the current tenant's rows)
    extra: dict[str, Any] = field(default_factory=dict)
    #: the kind this one is a variant of (the same models in another declarative style): it
    #: takes that kind's shapes and is judged as that kind (its declared refusals)
    like: str | None = None

    @property
    def relational(self) -> bool:
        return self.children is not None

    @property
    def judged_as(self) -> str:
        """The name of the kind whose shapes and refusals this kind takes: its own, or ``like``."""
        return self.like or self.name

    def new(self, n: int, tag: str) -> dict[str, Any]:
        """Values of a new ``root`` row: a fresh id, a label tagged with the writer."""
        row = {"id": NEW_ID + n, "label": f"{tag}:new{n}", **self.extra}
        if self.root is Report:
            row["summary"] = f"{tag}:summary{n}"
        return row


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("tenant", "a `TenantMixin` model", tenant=True, soft=False, root=Plain),
        Kind(
            "tenant_soft",
            "`TenantMixin` + `SoftDeleteMixin` parent and child (one-to-many, many-to-one)",
            tenant=True, soft=True, root=Parent, parent=Parent, child=Child,
            children=Parent.children, parent_of=Child.parent, fk="parent_id",
        ),
        Kind(
            "tenant_soft_legacy",
            "the `tenant_soft` pair declared with the legacy `declarative_base()`",
            tenant=True, soft=True, root=LegacyParent, parent=LegacyParent, child=LegacyChild,
            children=LegacyParent.children, parent_of=LegacyChild.parent, fk="parent_id",
            like="tenant_soft",
        ),
        Kind(
            "tenant_soft_mapped",
            "the `tenant_soft` pair declared with the `registry.mapped` decorator",
            tenant=True, soft=True, root=MappedParent, parent=MappedParent, child=MappedChild,
            children=MappedParent.children, parent_of=MappedChild.parent, fk="parent_id",
            like="tenant_soft",
        ),
        Kind(
            "joined",
            "joined-table inheritance of a tenant model (`Report(Doc)`), with an owner",
            tenant=True, soft=False, root=Report, parent=Owner, child=Doc,
            children=Owner.docs, parent_of=Doc.owner, sub=Report, fk="owner_id",
            write_col="summary",
        ),
        Kind(
            "single",
            "single-table inheritance of a tenant model (`Special(Item)`), with an owner",
            tenant=True, soft=False, root=Special, parent=Owner, child=Item,
            children=Owner.items, parent_of=Item.owner, sub=Special, fk="owner_id",
            extra={"kind": "special"},
        ),
        Kind(
            "assoc",
            "an association object (tenant + soft delete) linking two tenant models, with an "
            "association proxy",
            tenant=True, soft=True, root=Membership, parent=Team, child=Membership,
            children=Team.memberships, parent_of=Membership.team, fk="team_id",
            extra={"team_id": TENANT * 100 + 1, "person_id": TENANT * 100 + 2},
        ),
        Kind(
            "soft",
            "a `SoftDeleteMixin` parent and child without tenants",
            tenant=False, soft=True, root=Note, parent=Folder, child=Note,
            children=Folder.notes, parent_of=Note.folder, fk="folder_id",
        ),
    )
}


# --- the data ------------------------------------------------------------------------

_DEAD = datetime(2020, 1, 1, tzinfo=timezone.utc)


def _tag(tenant: int | None, what: str, dead: bool = False) -> str:
    owner = "*" if tenant is None else str(tenant)
    return f"t{owner}:{what}" + (":dead" if dead else "")


def parents_and_children(parent: type[Any], child: type[Any]) -> list[Any]:
    """The rows of a tenant + soft-delete parent/child pair (``seed_objects`` seeds every pair
    of :data:`PAIRS` with these, whatever style declared it).

    Per tenant ``t`` (ids ``t*100 + n``): parents 1-2 live, 3 dead; children live and dead under
    parent 1, live under parent 2 and under the dead parent 3, and a child of ``t`` under another
    tenant's parent 1 (id ``t*100 + 9``). The foreign tenant has one more parent and child
    (``205``).
    """

    other = {TENANT: FOREIGN, FOREIGN: TENANT, THIRD: TENANT}
    rows: list[Any] = []
    for t in TENANTS:
        b = t * 100
        rows += [
            parent(id=b + 1, tenant_id=t, label=_tag(t, f"parent{b + 1}")),
            parent(id=b + 2, tenant_id=t, label=_tag(t, f"parent{b + 2}")),
            parent(id=b + 3, tenant_id=t, label=_tag(t, f"parent{b + 3}", True), deleted_at=_DEAD),
        ]
    for t in TENANTS:
        b = t * 100
        rows += [
            child(id=b + 1, tenant_id=t, parent_id=b + 1, label=_tag(t, f"child{b + 1}")),
            child(id=b + 2, tenant_id=t, parent_id=b + 1, label=_tag(t, f"child{b + 2}", True),
                  deleted_at=_DEAD),
            child(id=b + 3, tenant_id=t, parent_id=b + 2, label=_tag(t, f"child{b + 3}")),
            child(id=b + 4, tenant_id=t, parent_id=b + 3, label=_tag(t, f"child{b + 4}")),
            # this tenant's child under another tenant's parent
            child(id=b + 9, tenant_id=t, parent_id=other[t] * 100 + 1,
                  label=_tag(t, f"child{b + 9}")),
        ]
    b = FOREIGN * 100
    rows += [
        parent(id=b + 5, tenant_id=FOREIGN, label=_tag(FOREIGN, f"parent{b + 5}")),
        child(id=b + 5, tenant_id=FOREIGN, parent_id=b + 5, label=_tag(FOREIGN, f"child{b + 5}")),
    ]
    return rows


def seed_objects() -> list[Any]:
    """Rows of three tenants, live and soft-deleted, with references across tenants.

    Per tenant ``t`` (ids ``t*100 + n``): plain rows 1-2; parents 1-2 live, 3 dead; children
    live and dead under parent 1, live under parent 2 and under the dead parent 3; a child of
    ``t`` under another tenant's parent 1 (id ``t*100 + 9``: tenant 2's child under tenant 1's
    parent, tenant 1's and 3's under tenant 2's and 1's), for every pair of :data:`PAIRS`
    (:func:`parents_and_children`); docs, reports, items and specials owned
    by owners, the ``t*100 + 9`` ones by another tenant's owner; teams, people,
    memberships live and dead, and a membership ``t*100 + 9`` linking another tenant's team and
    person. The foreign tenant has one more row (``205``) in each of its tables. Folders and notes (no tenant) live and dead, with a live note under a dead
    folder.
    """

    other = {TENANT: FOREIGN, FOREIGN: TENANT, THIRD: TENANT}

    rows: list[Any] = []
    for t in TENANTS:
        b = t * 100
        rows += [Plain(id=b + n, tenant_id=t, label=_tag(t, f"plain{b + n}")) for n in (1, 2)]
        rows += [Owner(id=b + n, tenant_id=t, label=_tag(t, f"owner{b + n}")) for n in (1, 2)]
    for parent, child in PAIRS:
        rows += parents_and_children(parent, child)
    for t in TENANTS:
        b = t * 100
        rows += [
            Doc(id=b + 1, tenant_id=t, owner_id=b + 1, label=_tag(t, f"doc{b + 1}")),
            Report(id=b + 2, tenant_id=t, owner_id=b + 1, label=_tag(t, f"doc{b + 2}"),
                   summary=_tag(t, f"summary{b + 2}")),
            Report(id=b + 3, tenant_id=t, owner_id=b + 2, label=_tag(t, f"doc{b + 3}"),
                   summary=_tag(t, f"summary{b + 3}")),
            Report(id=b + 9, tenant_id=t, owner_id=other[t] * 100 + 1,
                   label=_tag(t, f"doc{b + 9}"), summary=_tag(t, f"summary{b + 9}")),
            Item(id=b + 1, tenant_id=t, owner_id=b + 1, label=_tag(t, f"item{b + 1}")),
            Special(id=b + 2, tenant_id=t, owner_id=b + 1, label=_tag(t, f"item{b + 2}")),
            Special(id=b + 3, tenant_id=t, owner_id=b + 2, label=_tag(t, f"item{b + 3}")),
            Special(id=b + 9, tenant_id=t, owner_id=other[t] * 100 + 1,
                    label=_tag(t, f"item{b + 9}")),
            Team(id=b + 1, tenant_id=t, label=_tag(t, f"team{b + 1}")),
            Team(id=b + 2, tenant_id=t, label=_tag(t, f"team{b + 2}")),
            Person(id=b + 1, tenant_id=t, label=_tag(t, f"person{b + 1}")),
            Person(id=b + 2, tenant_id=t, label=_tag(t, f"person{b + 2}")),
            Person(id=b + 3, tenant_id=t, label=_tag(t, f"person{b + 3}")),
        ]
    for t in TENANTS:
        b = t * 100
        rows += [
            Membership(id=b + 1, tenant_id=t, team_id=b + 1, person_id=b + 1,
                       label=_tag(t, f"member{b + 1}")),
            Membership(id=b + 2, tenant_id=t, team_id=b + 1, person_id=b + 3,
                       label=_tag(t, f"member{b + 2}", True), deleted_at=_DEAD),
            Membership(id=b + 3, tenant_id=t, team_id=b + 2, person_id=b + 2,
                       label=_tag(t, f"member{b + 3}")),
            # this tenant's link between another tenant's team 1 and person 2
            Membership(id=b + 9, tenant_id=t, team_id=other[t] * 100 + 1,
                       person_id=other[t] * 100 + 2, label=_tag(t, f"member{b + 9}")),
        ]
    # the foreign tenant has a few more rows than the tenant: a count of the wrong tenant's
    # rows must not come out right by chance
    b = FOREIGN * 100
    rows += [
        Plain(id=b + 5, tenant_id=FOREIGN, label=_tag(FOREIGN, f"plain{b + 5}")),
        Report(id=b + 5, tenant_id=FOREIGN, owner_id=b + 1, label=_tag(FOREIGN, f"doc{b + 5}"),
               summary=_tag(FOREIGN, f"summary{b + 5}")),
        Special(id=b + 5, tenant_id=FOREIGN, owner_id=b + 1, label=_tag(FOREIGN, f"item{b + 5}")),
        Membership(id=b + 5, tenant_id=FOREIGN, team_id=b + 2, person_id=b + 1,
                   label=_tag(FOREIGN, f"member{b + 5}")),
    ]
    rows += [
        Folder(id=1, label=_tag(None, "folder1")),
        Folder(id=2, label=_tag(None, "folder2")),
        Folder(id=3, label=_tag(None, "folder3", True), deleted_at=_DEAD),
        Note(id=1, folder_id=1, label=_tag(None, "note1")),
        Note(id=2, folder_id=1, label=_tag(None, "note2", True), deleted_at=_DEAD),
        Note(id=3, folder_id=2, label=_tag(None, "note3")),
        Note(id=4, folder_id=3, label=_tag(None, "note4")),
        Note(id=5, folder_id=None, label=_tag(None, "note5")),
    ]
    return rows


def iso_tables() -> list[Table]:
    """Every table of the matrix (of every ``MetaData``), parents before children."""
    return [table for metadata in METADATAS for table in metadata.sorted_tables]
