"""Models shared by the audit tests (imported by basename; keep the name unique)."""

from __future__ import annotations

import os
from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import Audited, EncryptedString, Keyring, SoftDeleteMixin, Versioned

KEYRING = Keyring({"k1": os.urandom(32)}, active="k1")


class Base(DeclarativeBase):
    pass


class Doc(Audited, Base):
    """Plain columns: deleted_at and tenant_id are detected by name."""

    __tablename__ = "au_doc"
    __audit_exclude__ = frozenset({"password"})

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    price: Mapped[int] = mapped_column(default=0)
    password: Mapped[str | None]
    deleted_at: Mapped[datetime | None]
    tenant_id: Mapped[int | None] = mapped_column(BigInteger)


class Pair(Audited, Base):
    """Composite primary key, no tenant, no soft delete."""

    __tablename__ = "au_pair"

    a: Mapped[int] = mapped_column(primary_key=True)
    b: Mapped[str] = mapped_column(String(10), primary_key=True)
    note: Mapped[str | None]


class Card(Audited, Base):
    """Encrypted column: the database only ever sees ciphertext, and so does the log."""

    __tablename__ = "au_card"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(EncryptedString(keyring=KEYRING))


class Note(SoftDeleteMixin, Audited, Base):
    """The real soft-delete mixin: soft_delete()/restore() are logged as such."""

    __tablename__ = "au_note"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]


class Page(Versioned, Audited, Base):
    """History table + audit log on the same table."""

    __tablename__ = "au_page"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    views: Mapped[int] = mapped_column(default=0)
