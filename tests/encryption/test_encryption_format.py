"""The on-disk format is a contract: envelopes and blind indexes written by earlier releases
must keep reading and matching. The bytes below were produced by main at 6e5e6bc (before the
sealer refactor) with the fixed keys here; nonces were random then and are simply stored."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import MetaData, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_patterns import EncryptedBytes, EncryptedJSON, EncryptedString, Keyring

K_OLD = bytes(range(32))
K_NEW = bytes(range(100, 132))
I1 = bytes(range(200, 232))
RING = Keyring({"k-new": K_NEW, "2024-old": K_OLD}, index_keys={"i1": I1})

SECRET_NEW = bytes.fromhex(
    "01056b2d6e6577c8bd7dc73508b617959fe7f3939fcd2425d1c627e4d25efe4baa0027d5b8a2bee3a986a09040555659"
)
SECRET_OLD = bytes.fromhex(
    "0108323032342d6f6c6488e41c4ba93cb56d4411c8259663ba79b1a143684f4d5d2a07736ec386fcca7e5f316d7dc4"
    "fc5da5b82bdd6be7e2bafc69"
)
DOC_NEW = bytes.fromhex(
    "01056b2d6e657793c857017e44d28ea6782f884735702b39c0625b34a7ef2e46205d9621eb953df0fe3fe6f56669"
    "49bc38c6266bea7d9d5402bc46debefb"
)
BLOB_OLD = bytes.fromhex(
    "0108323032342d6f6c649eb99cd3d4e64b4d5b1aaaa4abe9d00fa4cbd6bf10d51b572265fb5873486c"
)
BIDX = bytes.fromhex("69313acd0ff56f0737290d8fd606a93f5d69ee8dac0e370bae57cc0e778f59bb43663b")


class Base(DeclarativeBase):
    pass


class Fixed(Base):
    __tablename__ = "enc_fixed"
    id: Mapped[int] = mapped_column(primary_key=True)
    secret: Mapped[str | None] = mapped_column(EncryptedString(RING, blind_index=True))
    doc: Mapped[Any] = mapped_column(EncryptedJSON(RING), nullable=True)
    blob: Mapped[bytes | None] = mapped_column(EncryptedBytes(RING))


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> list[MetaData]:
    return [Base.metadata]


def test_envelopes_written_before_the_refactor_still_decrypt_and_match(session: Session, sql: Any) -> None:
    sql(
        "INSERT INTO enc_fixed (id, secret, secret_bidx, doc, blob) VALUES (1, :s, :b, :d, :o), "
        "(2, :so, NULL, NULL, NULL)",
        s=SECRET_NEW, b=BIDX, d=DOC_NEW, o=BLOB_OLD, so=SECRET_OLD,
    )
    one = session.get(Fixed, 1)
    two = session.get(Fixed, 2)
    assert one is not None and two is not None
    assert (one.secret, one.doc, one.blob) == ("héllo wörld", {"a": True, "b": [1, 2.5, None]}, b"\x00\x01\xff")
    assert two.secret == "sealed by the old key"
    # the blind index written then is the one computed now, and lookups use it
    assert Fixed.__table__.c.secret.type.blind_index_value("héllo wörld") == BIDX
    assert session.scalars(select(Fixed.id).where(Fixed.secret == "héllo wörld")).all() == [1]


def test_a_value_sealed_now_has_the_same_layout(session: Session, sql: Any) -> None:
    session.add(Fixed(id=3, secret="héllo wörld"))
    session.flush()
    stored, index = sql("SELECT secret, secret_bidx FROM enc_fixed WHERE id = 3")[0]
    stored = bytes(stored)
    # version 1 | key id length | key id | 12-byte nonce | ciphertext + 16-byte tag
    assert stored[:7] == b"\x01\x05k-new" and len(stored) == 7 + 12 + len("héllo wörld".encode()) + 16
    assert bytes(index) == BIDX
