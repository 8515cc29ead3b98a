"""No error message, repr, traceback or log line carries key material, in any encoding.

Every error path of the keyring and the types is triggered with freshly generated keys, and the
text a user or a log collector would see is searched for the raw bytes, their hex and their
base64 forms."""

from __future__ import annotations

import base64
import logging
import os
import pickle
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, insert, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_patterns import EncryptedString, Keyring, SAPatternsError
from sa_patterns.encryption import check_keys, rotate_keys

K1, K2, K3, I1 = (os.urandom(32) for _ in range(4))
RING = Keyring({"k1": K1}, index_keys={"i1": I1})


class Base(DeclarativeBase):
    pass


class Vault(Base):
    __tablename__ = "enc_vault"
    id: Mapped[int] = mapped_column(primary_key=True)
    secret: Mapped[str | None] = mapped_column(EncryptedString(RING, blind_index=True))


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> list[MetaData]:
    return [Base.metadata]


def forms(key: bytes) -> list[str]:
    """Every way a key could be spelled in text."""
    b64 = base64.b64encode(key).decode()
    url = base64.urlsafe_b64encode(key).decode()
    return [
        key.hex(), key.hex().upper(), b64, b64.rstrip("="), url, url.rstrip("="),
        repr(key)[2:-1], key.decode("latin-1"), str(list(key)[:8])[1:-1],
    ]


def assert_clean(text_: str, *keys: bytes) -> None:
    for key in keys or (K1, K2, K3, I1):
        for form in forms(key):
            assert form not in text_, f"key material at offset {text_.find(form)} of the text"


def raised(fn: Callable[[], Any]) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    exc = info.value
    assert isinstance(exc, (SAPatternsError, TypeError)), repr(exc)
    return exc


def assert_exc_clean(exc: BaseException, *keys: bytes) -> None:
    shown = [str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception(exc))]
    assert_clean("\n".join(shown), *keys)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def url(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


BAD_KEYRINGS: list[Callable[[], Any]] = [
    lambda: Keyring({K1: "k1"}),  # type: ignore[dict-item]  # id and key swapped
    lambda: Keyring({K1: K2}),  # type: ignore[dict-item]  # bytes id
    lambda: Keyring({b64(K1): "k1"}),  # type: ignore[dict-item]  # base64 key as the id
    lambda: Keyring({url(K1): "k1"}),  # type: ignore[dict-item]  # a urlsafe key is a valid id
    lambda: Keyring({url(K1): K2[:31]}),
    lambda: Keyring({"k1": K1[:31]}),
    lambda: Keyring({"k1": K1 + b"x"}),
    lambda: Keyring({"k1": b64(K1)}),  # type: ignore[dict-item]  # base64 instead of bytes
    lambda: Keyring({"k1": K1.hex()}),  # type: ignore[dict-item]
    lambda: Keyring({"k1": K1}, active=b64(K2)),
    lambda: Keyring({"k1": K1}, active=K2),  # type: ignore[arg-type]
    lambda: Keyring({"k1": K1}, index_keys={I1: "i1"}),  # type: ignore[dict-item]
    lambda: Keyring({"k1": K1}, index_keys={"i1": I1[:16]}),
    lambda: Keyring({"k1": K1}, index_keys={"i1": I1}, active_index=b64(I1)),
    lambda: Keyring.from_env("K", {"K": f"{b64(K1)}:k1"}),  # swapped in the variable
    lambda: Keyring.from_env("K", {"K": f"{url(K1)}:k1"}),
    lambda: Keyring.from_env("K", {"K": f"k1:{b64(K1[:31])}"}),
    lambda: Keyring.from_env("K", {"K": f"k1:{b64(K1)}!"}),
    lambda: Keyring.from_env("K", {"K": b64(K1)}),  # no id at all
    lambda: Keyring.from_env("K", {"K": f"k1:{b64(K1)}", "K_INDEX": f"{b64(I1)}:i1"}),
    lambda: Keyring.from_env("K", {"K": f"k1:{b64(K1)}", "K_ACTIVE": b64(K2)}),
]


@pytest.mark.parametrize("make", BAD_KEYRINGS, ids=range(len(BAD_KEYRINGS)))
def test_keyring_errors_never_show_key_material(make: Callable[[], Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    exc = raised(make)
    assert_exc_clean(exc)
    assert_clean(caplog.text)


def test_swapped_id_and_key_is_named_as_such() -> None:
    with pytest.raises(Exception, match="look swapped") as info:
        Keyring({K1: "k1"})  # type: ignore[dict-item]
    assert "number 1" in str(info.value)


def test_reprs_and_pickling_show_no_key_material() -> None:
    ring = Keyring({"k2": K2, "k1": K1}, index_keys={"i1": I1})
    assert_clean(repr(ring) + str(ring))
    assert_clean(repr(Vault.__table__.c.secret.type))
    assert_exc_clean(raised(lambda: pickle.dumps(ring)))


def test_runtime_errors_never_show_key_material(session: Session, sql: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    type_ = Vault.__table__.c.secret.type
    session.add(Vault(id=1, secret="x"))
    session.flush()
    errors: list[BaseException] = []

    def load() -> Any:
        session.expunge_all()
        return session.scalars(select(Vault.secret).where(Vault.id == 1)).one()

    # unknown key id, then the same id with another key (authentication fails), then garbage
    sql("UPDATE enc_vault SET secret = :v WHERE id = 1", v=type_.seal(b"x", Keyring({"k9": K3})))
    errors.append(raised(load))
    sql("UPDATE enc_vault SET secret = :v WHERE id = 1", v=type_.seal(b"x", Keyring({"k1": K3})))
    errors.append(raised(load))
    sql("UPDATE enc_vault SET secret = substring(secret from 1 for 9) WHERE id = 1")
    errors.append(raised(load))
    # a blind index without index keys; an index key id the ring lacks
    errors.append(raised(lambda: Keyring({"k1": K1}).mac(b"x")))
    errors.append(raised(lambda: RING.mac(b"x", "i9")))
    errors.append(raised(lambda: RING.aead("k9")))
    # the start-up check, with a keyring whose key is too short behind a deferred provider
    meta = MetaData()
    Table("enc_short", meta, Column("id", Integer, primary_key=True),
          Column("s", EncryptedString(lambda: Keyring({"k1": K1[:20]}))))
    errors.append(raised(lambda: check_keys(meta)))
    for exc in errors:
        assert_exc_clean(exc)
    assert_clean(caplog.text)


def test_rotation_errors_never_show_key_material(engine: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A rotation that meets a value it cannot open stops with a DecryptionError naming the row;
    run on its own table, committed through the engine and dropped afterwards."""
    caplog.set_level(logging.DEBUG)
    meta = MetaData()
    table = Table("enc_vault", meta, Column("id", Integer, primary_key=True),
                  Column("secret", EncryptedString(Keyring({"k2": K2, "k1": K1}, index_keys={"i1": I1}),
                                                   blind_index_name="secret_bidx")),
                  Column("secret_bidx", LargeBinary()))
    with engine.begin() as conn:
        conn.execute(insert(table).values(id=100, secret="old"))
        conn.execute(text("UPDATE enc_vault SET secret = :v WHERE id = 100"),
                     {"v": table.c.secret.type.seal(b"x", Keyring({"k1": K3}))})
    try:
        exc = raised(lambda: rotate_keys(engine, table))
        assert "id=100" in str(exc)
        assert_exc_clean(exc)
        assert_clean(caplog.text)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM enc_vault WHERE id = 100"))
