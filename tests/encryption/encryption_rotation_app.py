"""The model the rotation tests (and the rotate-keys subprocess) use; keys come from
SA_PATTERNS_KEYS / SA_PATTERNS_KEYS_INDEX, as in an application."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import EncryptedJSON, EncryptedString


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "enc_rot_account"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str | None] = mapped_column(EncryptedString(blind_index=True, normalize="lower"))
    doc: Mapped[Any] = mapped_column(EncryptedJSON(), nullable=True)
