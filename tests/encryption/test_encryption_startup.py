"""check_keys(): a keyring misconfiguration fails when the application starts, naming each
column and what is wrong, rather than at the first row that needs a key."""

from __future__ import annotations

import base64
import os

import pytest
from sqlalchemy import Column, Integer, MetaData, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns import ConfigurationError, EncryptedString, Keyring
from sa_patterns.encryption import check_keys

K1, I1 = os.urandom(32), os.urandom(32)


def test_every_misconfigured_column_is_named_with_its_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SA_PATTERNS_KEYS", raising=False)
    meta = MetaData()
    Table("a", meta, Column("id", Integer, primary_key=True),
          Column("secret", EncryptedString(lambda: Keyring({"k1": K1[:16]}))))
    Table("b", meta, Column("id", Integer, primary_key=True),
          Column("email", EncryptedString(Keyring({"k1": K1}), blind_index=True)))
    Table("c", meta, Column("id", Integer, primary_key=True), Column("note", EncryptedString()))
    Table("d", meta, Column("id", Integer, primary_key=True),
          Column("fine", EncryptedString(Keyring({"k1": K1}, index_keys={"i1": I1}), blind_index=True)))
    with pytest.raises(ConfigurationError) as info:
        check_keys(meta)
    message = str(info.value)
    assert "3 column(s)" in message
    assert "a.secret: " in message and "exactly 32 random bytes" in message
    assert "b.email: " in message and "no blind-index keys" in message
    assert "c.note: " in message and "SA_PATTERNS_KEYS is not set" in message
    assert "d.fine" not in message
    for key in (K1, I1):
        assert key.hex() not in message and base64.b64encode(key).decode() not in message


def test_a_failing_provider_is_named_and_a_good_setup_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    def kms() -> Keyring:
        raise TimeoutError("the KMS did not answer")

    class Base(DeclarativeBase):
        pass

    class Account(Base):
        __tablename__ = "enc_account"
        id: Mapped[int] = mapped_column(primary_key=True)
        iban: Mapped[str] = mapped_column(EncryptedString(kms))

    with pytest.raises(ConfigurationError, match=r"enc_account\.iban: its keyring provider raised TimeoutError"):
        check_keys(Base)

    class Good(DeclarativeBase):
        pass

    class Card(Good):
        __tablename__ = "enc_card"
        id: Mapped[int] = mapped_column(primary_key=True)
        pan: Mapped[str] = mapped_column(EncryptedString(Keyring({"k1": K1}, index_keys={"i1": I1}), blind_index=True))
        holder: Mapped[str] = mapped_column(EncryptedString(Keyring({"k1": K1})))

    # a declarative base, its registry, a model, a mapper and a list all name the same columns
    assert check_keys(Good) == 2
    assert check_keys(Good.registry) == 2
    assert check_keys([Card, Card.__mapper__]) == 2
