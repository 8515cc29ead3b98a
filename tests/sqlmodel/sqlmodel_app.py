"""A small FastAPI app on SQLModel, as the issue's users write one (imported by the tests, never
collected): table models in ``SQLModel.metadata`` (SQLModel's default registry, where an app's
tables are) with the toolkit's mixins from ``sa_patterns.sqlmodel``, the API
schemas that leave ``tenant_id`` out, and endpoints on an installed SQLModel session whose tenant
comes from the request (``session.info["tenant_id"]``, which wins over any scope).

No ``from __future__ import annotations``: SQLModel reads relationship annotations at runtime.
"""

import uuid
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException
from sqlalchemy import Uuid
from sqlmodel import Field, Relationship, Session, SQLModel, select

from sa_patterns import EncryptedString, Keyring, soft_unique, tenant_foreign_key, tenant_unique
from sa_patterns.sqlmodel import (
    Audited,
    Searchable,
    SoftDeleteMixin,
    TenantMixin,
    Versioned,
    tenant_field,
)

KEYRING = Keyring({"k1": bytes(range(32))}, active="k1", index_keys={"i1": bytes(range(32, 64))})


class Project(SoftDeleteMixin, TenantMixin, Audited, SQLModel, table=True):
    __tablename__ = "sqm_projects"
    __table_args__ = (tenant_unique("id"), soft_unique("name"))
    id: int | None = Field(default=None, primary_key=True)
    name: str
    items: list["Item"] = Relationship(back_populates="project")


class ItemBase(SQLModel):
    """What a client may send: no tenant_id, no soft-delete columns."""

    name: str
    note: str | None = None
    project_id: int


class Item(SoftDeleteMixin, TenantMixin, Audited, Versioned, ItemBase, table=True):
    __tablename__ = "sqm_items"
    __table_args__ = (tenant_foreign_key("project_id", "sqm_projects.id"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int
    note: str | None = Field(default=None, sa_type=EncryptedString(keyring=KEYRING))
    project: Project | None = Relationship(back_populates="items")


class ItemCreate(ItemBase):
    pass


class ItemPublic(ItemBase):
    id: int


class Article(Searchable, TenantMixin, SQLModel, table=True):
    __tablename__ = "sqm_articles"
    __searchable__ = {"title": "A", "body": "B"}
    id: int | None = Field(default=None, primary_key=True)
    title: str
    body: str


class Contact(TenantMixin, SQLModel, table=True):
    """An encrypted field with a blind index: equality search without decrypting. The digest
    column (``email_bidx``) is added to the table, not a field: the column keeps it current."""

    __tablename__ = "sqm_contacts"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_type=EncryptedString(keyring=KEYRING, blind_index=True))


class Note(TenantMixin, SQLModel, table=True):
    """A model whose tenants are UUIDs: the field redeclared with tenant_field(Uuid)."""

    __tablename__ = "sqm_notes"
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: uuid.UUID | None = tenant_field(Uuid)
    body: str


metadata = SQLModel.metadata  # as a real app: the tables of every table=True model


def make_app(sessions: Callable[[], Session]) -> FastAPI:
    """The app, on ``sessions`` (an installed ``sessionmaker(class_=sqlmodel.Session)``)."""
    app = FastAPI()

    def session(x_tenant: Annotated[int, Header()]) -> Iterator[Session]:
        with sessions() as s:
            s.info["tenant_id"] = x_tenant
            yield s

    Db = Annotated[Session, Depends(session)]

    @app.post("/items", response_model=ItemPublic)
    def create_item(payload: ItemCreate, db: Db) -> Item:
        item = Item.model_validate(payload)  # tenant_id: filled at flush from the request's
        db.add(item)
        db.commit()
        db.refresh(item)
        return item

    @app.get("/items", response_model=list[ItemPublic])
    def list_items(db: Db) -> list[Item]:
        return list(db.exec(select(Item).order_by(Item.id)))

    @app.get("/items/{item_id}", response_model=ItemPublic)
    def read_item(item_id: int, db: Db) -> Item:
        item = db.get(Item, item_id)
        if item is None:
            raise HTTPException(404)
        return item

    @app.delete("/items/{item_id}", status_code=204)
    def delete_item(item_id: int, db: Db) -> None:
        item = db.get(Item, item_id)
        if item is None:
            raise HTTPException(404)
        db.delete(item)  # a soft delete
        db.commit()

    @app.get("/search", response_model=list[int])
    def search(q: str, db: Db) -> list[int]:
        return [a.id for a in db.exec(Article.search(q)) if a.id is not None]

    return app


__all__ = ["Article", "Contact", "Item", "ItemCreate", "ItemPublic", "Note", "Project", "make_app", "metadata"]
