"""Encrypted column types against PostgreSQL: what is stored, what reads back, what is refused.

As the plugin's app role, on tables create_all built as the owner role (with the grants
manage_access() writes); renaming a table and column is DDL, the owner's."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import hmac
import os
import pickle
from typing import Any

import pytest
from sqlalchemy import Engine, ForeignKey, MetaData, insert, select, text, update
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, aliased, mapped_column

import sa_patterns
from sa_patterns import (
    ConfigurationError,
    DecryptionError,
    EncryptedBytes,
    EncryptedJSON,
    EncryptedString,
    EncryptedValue,
    KeyNotFound,
    Keyring,
    blind_eq,
)
from sa_patterns.encryption import KeyContext, Serializer, check_keys, generate_key

K1, K2, K9 = os.urandom(32), os.urandom(32), os.urandom(32)
I1 = os.urandom(32)
RING = Keyring({"k1": K1}, index_keys={"i1": I1})
_current: dict[str, Keyring] = {"ring": RING}


def ring() -> Keyring:
    """A deferred provider the tests can re-point (as an app would after a reload)."""
    return _current["ring"]


MONEY = Serializer(
    "tests.encryption.test_encryption_types:MONEY",
    lambda v: f"{v[0]}|{v[1]}".encode(),
    lambda b: (b.decode().split("|")[0], decimal.Decimal(b.decode().split("|")[1])),
    tuple,
)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "enc_customer"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(default="")
    email: Mapped[str | None] = mapped_column(
        EncryptedString(RING, blind_index=True, normalize=("strip", "lower"))
    )
    note: Mapped[str | None] = mapped_column(EncryptedString(RING))
    blob: Mapped[bytes | None] = mapped_column(EncryptedBytes(RING))
    doc: Mapped[Any] = mapped_column(EncryptedJSON(RING), nullable=True)
    born: Mapped[dt.date | None] = mapped_column(EncryptedValue("date", RING))
    balance: Mapped[decimal.Decimal | None] = mapped_column(EncryptedValue("decimal", RING))
    money: Mapped[Any] = mapped_column(EncryptedValue(MONEY, RING), nullable=True)


class Deferred(Base):
    """Keyring through a deferred provider (models import before keys are loaded)."""

    __tablename__ = "enc_deferred"
    id: Mapped[int] = mapped_column(primary_key=True)
    secret: Mapped[str | None] = mapped_column(EncryptedString(ring))


class Other(Base):
    __tablename__ = "enc_other"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("enc_customer.id"))
    note: Mapped[str | None] = mapped_column(EncryptedString(RING))


TENANT_KEYS = {1: os.urandom(32), 2: os.urandom(32)}
TENANT_INDEX = {1: os.urandom(32), 2: os.urandom(32)}


def tenant_ring(ctx: KeyContext) -> Keyring:
    if ctx.tenant is None:
        raise ConfigurationError("no tenant in scope for a per-tenant keyring")
    t = int(ctx.tenant)
    return Keyring({f"t{t}": TENANT_KEYS[t]}, index_keys={f"t{t}i": TENANT_INDEX[t]})


class TenantSecret(Base):
    __tablename__ = "enc_tenant_secret"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[int]
    secret: Mapped[str | None] = mapped_column(EncryptedString(tenant_ring, blind_index=True))


class FlushBase(DeclarativeBase):
    pass


class EnvFlush(FlushBase):
    """Keys from the environment, looked up when a value is written."""

    __tablename__ = "enc_env_flush"
    id: Mapped[int] = mapped_column(primary_key=True)
    secret: Mapped[str] = mapped_column(EncryptedString())


class LongBase(DeclarativeBase):
    pass


class LongName(LongBase):
    __tablename__ = "enc_long_name"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[str] = mapped_column("v" * 60, EncryptedString(RING, blind_index=True))


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> list[MetaData]:
    return [Base.metadata, FlushBase.metadata, LongBase.metadata]


def raw(sql: Any, column: str, id_: int, table: str = "enc_customer") -> bytes:
    return bytes(sql(f"SELECT {column} FROM {table} WHERE id = :i", i=id_)[0][0])


# -- storage and round trips ------------------------------------------------------------------

def test_round_trip_every_type_and_what_the_database_holds(session: Session, sql: Any) -> None:
    doc = {"a": [1, 2.5, True, None, "x"], "nested": {"k": False}}
    c = Customer(
        id=1, email="Alice@Example.com", note="top secret", blob=b"\x00\xff", doc=doc,
        born=dt.date(1990, 5, 17), balance=decimal.Decimal("12.3400"),
        money=("EUR", decimal.Decimal("9.99")),
    )
    session.add(c)
    session.commit()
    session.expunge_all()
    got = session.get(Customer, 1)
    assert got is not None
    assert (got.email, got.note, got.blob, got.doc) == ("Alice@Example.com", "top secret", b"\x00\xff", doc)
    assert got.born == dt.date(1990, 5, 17) and got.balance == decimal.Decimal("12.3400")
    assert str(got.balance) == "12.3400"
    assert got.money == ("EUR", decimal.Decimal("9.99"))

    # the column is bytea and holds an envelope: version 1, key id, nonce, ciphertext + tag
    assert sql(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'enc_customer' "
        "AND column_name = 'note' AND table_schema = current_schema()"
    )[0][0] == "bytea"
    stored = raw(sql, "note", 1)
    assert stored[:4] == b"\x01\x02k1" and b"top secret" not in stored
    assert len(stored) == 4 + 12 + len("top secret") + 16
    assert b"Alice" not in raw(sql, "email", 1) and b"alice" not in raw(sql, "email_bidx", 1)


@pytest.mark.parametrize("value", [{"k": [1, {"x": None}]}, [1, "two", 3.5], 7, 2.25, True, False, "s", None])
def test_json_typed_round_trip(session: Session, value: Any) -> None:
    session.add(Customer(id=50, doc=value))
    session.flush()
    session.expunge_all()
    got = session.scalars(select(Customer.doc).where(Customer.id == 50)).one()
    assert got == value and type(got) is type(value)


def test_random_nonce_equal_plaintexts_differ(session: Session, sql: Any) -> None:
    session.add_all([Customer(id=2, note="same"), Customer(id=3, note="same")])
    session.flush()
    a, b = raw(sql, "note", 2), raw(sql, "note", 3)
    assert a != b and a[4:16] != b[4:16]  # different nonces, different ciphertexts


def test_core_insert_and_select(connection: Any, sql: Any) -> None:
    connection.execute(insert(Customer), [{"id": 4, "note": "core", "email": "C@x.io"}])
    assert connection.execute(select(Customer.note).where(Customer.id == 4)).scalar_one() == "core"
    # the blind index was filled by the column default from the Core INSERT's plaintext
    assert connection.execute(select(Customer.id).where(Customer.email == "c@x.io")).scalar_one() == 4


# -- bad input --------------------------------------------------------------------------------

def _load_note(session: Session, id_: int, column: Any = None) -> Any:
    session.expunge_all()
    return session.execute(select(column if column is not None else Customer.note).where(Customer.id == id_)).scalar_one()


def test_tampered_value_raises_decryption_error_naming_table_and_column(session: Session, sql: Any) -> None:
    session.add(Customer(id=5, note="hello"))
    session.flush()
    # flip every bit of one byte: overwriting it with a constant left it unchanged 1 time in 256
    sql("UPDATE enc_customer SET note = set_byte(note, 19, get_byte(note, 19) # 255) WHERE id = 5")
    with pytest.raises(DecryptionError) as info:
        _load_note(session, 5)
    assert info.value.table == "enc_customer" and info.value.column == "note"
    assert "enc_customer.note" in str(info.value) and "InvalidTag" not in repr(info.value)
    assert info.value.__cause__ is None and not isinstance(info.value, KeyNotFound)


def test_value_moved_to_another_column_or_table_fails(session: Session, sql: Any) -> None:
    session.add(Customer(id=6, note="note text", email="e@x.io"))
    session.add(Other(id=6, note="other text"))
    session.flush()
    sql("UPDATE enc_customer SET email = note WHERE id = 6")  # same key, same table, other column
    with pytest.raises(DecryptionError, match=r"enc_customer\.email"):
        _load_note(session, 6, Customer.email)
    sql("UPDATE enc_other SET note = (SELECT note FROM enc_customer WHERE id = 6) WHERE id = 6")
    session.expunge_all()
    with pytest.raises(DecryptionError, match=r"enc_other\.note") as info:
        session.execute(select(Other.note).where(Other.id == 6)).scalar_one()
    assert info.value.table == "enc_other"


def test_truncated_and_non_envelope_values(session: Session, sql: Any) -> None:
    session.add_all([Customer(id=7, note="truncate me"), Customer(id=8)])
    session.flush()
    sql("UPDATE enc_customer SET note = substring(note from 1 for 20) WHERE id = 7")
    with pytest.raises(DecryptionError, match="truncated"):
        _load_note(session, 7)
    sql("UPDATE enc_customer SET note = 'plain text written by a script'::bytea WHERE id = 8")
    with pytest.raises(DecryptionError, match="not a sa_patterns envelope") as info:
        _load_note(session, 8)
    assert info.value.column == "note"


def test_unknown_key_id_raises_key_not_found(session: Session, sql: Any) -> None:
    foreign = Keyring({"k9": K9})
    sealed = Customer.__table__.c.note.type.seal(b"from elsewhere", foreign)
    session.add(Customer(id=9))
    session.flush()
    sql("UPDATE enc_customer SET note = :v WHERE id = 9", v=sealed)
    with pytest.raises(KeyNotFound) as info:
        _load_note(session, 9)
    assert info.value.key_id == "k9" and info.value.table == "enc_customer"
    assert "'k9'" in str(info.value) and "enc_customer.note" in str(info.value)


def test_same_key_id_different_key_is_a_decryption_error(session: Session, sql: Any) -> None:
    impostor = Keyring({"k1": K9})
    sealed = Customer.__table__.c.note.type.seal(b"x", impostor)
    session.add(Customer(id=10))
    session.flush()
    sql("UPDATE enc_customer SET note = :v WHERE id = 10", v=sealed)
    with pytest.raises(DecryptionError, match="authentication failed"):
        _load_note(session, 10)


def test_wrong_python_type_is_refused_before_sql(session: Session) -> None:
    session.add(Customer(id=11, note=12345))  # type: ignore[arg-type]
    with pytest.raises(StatementError, match="expected str, got int"):
        session.flush()


# -- keyrings ---------------------------------------------------------------------------------

def test_keyring_rejects_bad_keys_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="exactly 32 random bytes"):
        Keyring({"k1": b"short"})
    with pytest.raises(ConfigurationError, match="exactly 32"):
        Keyring({"k1": "a string key"})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="id"):
        Keyring({"bad id!": K1})
    with pytest.raises(ConfigurationError, match="active"):
        Keyring({"k1": K1}, active="k2")
    with pytest.raises(ConfigurationError, match="at least one key"):
        Keyring({})


def test_keyring_from_env() -> None:
    b = lambda k: base64.b64encode(k).decode()  # noqa: E731
    env = {"APP_KEYS": f"k2:{b(K2)}, k1:{b(K1)}", "APP_KEYS_INDEX": f"i1:{b(I1)}"}
    r = Keyring.from_env("APP_KEYS", env)
    assert r.active == "k2" and r.key_ids == ("k2", "k1") and r.active_index == "i1"
    r = Keyring.from_env("APP_KEYS", {**env, "APP_KEYS_ACTIVE": "k1"})
    assert r.active == "k1"
    with pytest.raises(ConfigurationError, match="APP_KEYS is not set"):
        Keyring.from_env("APP_KEYS", {})
    with pytest.raises(ConfigurationError, match="not valid base64"):
        Keyring.from_env("APP_KEYS", {"APP_KEYS": "k1:***"})
    with pytest.raises(ConfigurationError, match="exactly 32"):
        Keyring.from_env("APP_KEYS", {"APP_KEYS": f"k1:{b(b'x' * 16)}"})
    assert len(base64.b64decode(generate_key())) == 32


def test_keyring_repr_and_pickle_hold_no_key_material() -> None:
    text_ = repr(RING)
    assert text_ == "Keyring(keys=['k1'], active='k1', index_keys=['i1'])"
    for key in (K1, I1):
        assert base64.b64encode(key).decode() not in text_ and key.hex() not in text_
    with pytest.raises(TypeError):
        pickle.dumps(RING)


def test_missing_keyring_is_a_configuration_error_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    class B(DeclarativeBase):
        pass

    class Env(B):
        __tablename__ = "enc_env_only"
        id: Mapped[int] = mapped_column(primary_key=True)
        secret: Mapped[str] = mapped_column(EncryptedString())  # SA_PATTERNS_KEYS at first use

    monkeypatch.delenv("SA_PATTERNS_KEYS", raising=False)
    with pytest.raises(ConfigurationError, match="SA_PATTERNS_KEYS is not set"):
        check_keys(B.metadata)
    monkeypatch.setenv("SA_PATTERNS_KEYS", "k1:" + base64.b64encode(b"x" * 31).decode())
    with pytest.raises(ConfigurationError, match="exactly 32"):
        check_keys(Env)
    monkeypatch.setenv("SA_PATTERNS_KEYS", "k1:" + generate_key())
    assert check_keys(B.metadata) == 1

    class NoIndex(B):
        __tablename__ = "enc_no_index"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str] = mapped_column(EncryptedString(Keyring({"k1": K1}), blind_index=True))

    with pytest.raises(ConfigurationError, match="no blind-index keys"):
        check_keys(NoIndex)


def test_type_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="normalize= only shapes the blind index"):
        EncryptedString(RING, normalize="lower")
    with pytest.raises(ConfigurationError, match="unknown normalize"):
        EncryptedString(RING, blind_index=True, normalize="upper")
    with pytest.raises(ConfigurationError, match=r"package\.module:NAME"):
        EncryptedValue(Serializer("nameless", bytes, bytes))
    with pytest.raises(ConfigurationError, match="keyring= takes a Keyring"):
        EncryptedString(keyring="k1:abc")  # type: ignore[arg-type]
    shared = EncryptedString(RING)

    class B(DeclarativeBase):
        pass

    with pytest.raises(ConfigurationError, match="its own instance"):

        class Twice(B):
            __tablename__ = "enc_twice"
            id: Mapped[int] = mapped_column(primary_key=True)
            a: Mapped[str] = mapped_column(shared)
            b: Mapped[str] = mapped_column(shared)


def test_read_with_any_key_write_with_active(session: Session, sql: Any) -> None:
    _current["ring"] = Keyring({"k1": K1})
    Deferred.__table__.c.secret.type.reset_keyring()  # as after a process restart
    session.add(Deferred(id=1, secret="old"))
    session.flush()
    assert raw(sql, "secret", 1, "enc_deferred")[2:4] == b"k1"
    _current["ring"] = Keyring({"k2": K2, "k1": K1})  # k2 active, k1 still readable
    Deferred.__table__.c.secret.type.reset_keyring()
    try:
        session.expunge_all()
        assert session.get(Deferred, 1).secret == "old"  # type: ignore[union-attr]
        session.add(Deferred(id=2, secret="new"))
        session.flush()
        assert raw(sql, "secret", 2, "enc_deferred")[2:4] == b"k2"
    finally:
        _current["ring"] = RING
        Deferred.__table__.c.secret.type.reset_keyring()


# -- blind index ------------------------------------------------------------------------------

def test_blind_index_column_index_and_lookups(session: Session, sql: Any) -> None:
    session.add_all([Customer(id=20, email=" Bob@Example.COM "), Customer(id=21, email="carol@x.io"), Customer(id=22)])
    session.flush()
    expected = b"i1:" + hmac.new(I1, b"bob@example.com", hashlib.sha256).digest()
    assert raw(sql, "email_bidx", 20) == expected
    assert sql("SELECT indexdef FROM pg_indexes WHERE tablename = 'enc_customer' AND indexname = 'ix_enc_customer_email_bidx'")
    find = lambda *crit: sorted(session.scalars(select(Customer.id).where(*crit)))  # noqa: E731
    assert find(Customer.email == "bob@example.com") == [20]
    assert find(blind_eq(Customer.email, "BOB@example.com  ")) == [20]
    assert find(Customer.email.in_(["carol@x.io", "bob@example.com", "nobody"])) == [20, 21]
    assert find(Customer.email != "bob@example.com", Customer.id >= 20) == [21]
    assert find(Customer.email.not_in(["carol@x.io"]), Customer.id >= 20) == [20]
    assert find(Customer.email.is_(None), Customer.id >= 20) == [22]
    assert find(Customer.email.in_([])) == []
    c = aliased(Customer)
    assert sorted(session.scalars(select(c.id).where(c.email == "carol@x.io"))) == [21]
    # the stored value keeps its exact form; only the index is normalized
    session.expunge_all()
    assert session.get(Customer, 20).email == " Bob@Example.COM "  # type: ignore[union-attr]


def test_blind_index_follows_orm_updates(session: Session, sql: Any) -> None:
    session.add(Customer(id=23, email="dave@x.io"))
    session.commit()
    c = session.get(Customer, 23)
    assert c is not None
    c.email = "eve@x.io"
    session.commit()
    assert session.scalars(select(Customer.id).where(Customer.email == "eve@x.io")).all() == [23]
    assert session.scalars(select(Customer.id).where(Customer.email == "dave@x.io")).all() == []
    c.name = "untouched email"
    session.commit()
    assert raw(sql, "email_bidx", 23) == b"i1:" + hmac.new(I1, b"eve@x.io", hashlib.sha256).digest()
    c.email = None
    session.commit()
    assert sql("SELECT email_bidx FROM enc_customer WHERE id = 23")[0][0] is None


def test_core_update_sets_the_blind_index_with_the_helper(connection: Any) -> None:
    connection.execute(insert(Customer).values(id=24, email="old@x.io"))
    connection.execute(
        update(Customer).where(Customer.id == 24).values(
            email="new@x.io", email_bidx=sa_patterns.encryption.blind_index_value(Customer.email, "new@x.io")
        )
    )
    assert connection.execute(select(Customer.id).where(Customer.email == "new@x.io")).scalar_one() == 24


def test_equality_without_blind_index_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="without a blind index"):
        select(Customer).where(Customer.note == "x")


def test_per_tenant_keyrings(session: Session, sql: Any) -> None:
    with sa_patterns.tenant_scope(1):
        session.add(TenantSecret(id=1, tenant=1, secret="one"))
        session.flush()
    with sa_patterns.tenant_scope(2):
        session.add(TenantSecret(id=2, tenant=2, secret="two"))
        session.flush()
    assert raw(sql, "secret", 1, "enc_tenant_secret")[2:4] == b"t1"
    assert raw(sql, "secret", 2, "enc_tenant_secret")[2:4] == b"t2"
    session.expunge_all()
    with sa_patterns.tenant_scope(1):
        assert session.scalars(select(TenantSecret.secret).where(TenantSecret.id == 1)).one() == "one"
        assert session.scalars(select(TenantSecret.id).where(TenantSecret.secret == "one")).all() == [1]
        # tenant 1's keyring cannot open tenant 2's value
        with pytest.raises(KeyNotFound, match=r"enc_tenant_secret\.secret"):
            session.scalars(select(TenantSecret.secret).where(TenantSecret.id == 2)).one()


def test_literal_rendering_is_refused() -> None:
    from sqlalchemy.dialects import postgresql

    stmt = insert(Customer).values(id=1, note="secret")
    # bytea has no literal form: ciphertext (or plaintext) never ends up in SQL text
    with pytest.raises(Exception, match="Could not render literal value"):
        stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})


# -- async ------------------------------------------------------------------------------------

async def test_async_round_trip_and_blind_index(async_session: AsyncSession, async_connection: Any) -> None:
    async_session.add(Customer(id=30, email="Async@x.io", doc={"a": 1}, born=dt.date(2000, 1, 2)))
    await async_session.flush()
    stored = (await async_connection.execute(text("SELECT note IS NULL, email FROM enc_customer WHERE id = 30"))).one()
    assert bytes(stored[1]).startswith(b"\x01\x02k1")
    async_session.expunge_all()
    got = (await async_session.scalars(select(Customer).where(Customer.email == "async@x.io"))).one()
    assert (got.email, got.doc, got.born) == ("Async@x.io", {"a": 1}, dt.date(2000, 1, 2))
    got.email = "moved@x.io"
    await async_session.flush()
    assert (await async_session.scalars(select(Customer.id).where(Customer.email == "moved@x.io"))).all() == [30]
    await async_connection.execute(text("UPDATE enc_customer SET doc = 'junk'::bytea WHERE id = 30"))
    async_session.expunge_all()
    with pytest.raises(DecryptionError, match=r"enc_customer\.doc"):
        await async_session.scalars(select(Customer.doc).where(Customer.id == 30))


def test_bind_to_keeps_values_readable_after_a_rename(owner_engine: Engine) -> None:
    """Renames are DDL: the owner's, in a transaction rolled back after the test."""
    from sqlalchemy import Column, Integer, Table

    with owner_engine.connect() as connection, connection.begin() as tx:
        before = Table("enc_rename", MetaData(), Column("id", Integer, primary_key=True),
                       Column("secret", EncryptedString(RING)))
        before.create(connection)
        connection.execute(before.insert().values(id=1, secret="survives renames"))
        connection.execute(text("ALTER TABLE enc_rename RENAME COLUMN secret TO hidden"))
        connection.execute(text("ALTER TABLE enc_rename RENAME TO enc_renamed"))
        pinned = Table("enc_renamed", MetaData(), Column("id", Integer, primary_key=True),
                       Column("hidden", EncryptedString(RING, bind_to="enc_rename.secret")))
        unpinned = Table("enc_renamed", MetaData(), Column("id", Integer, primary_key=True),
                         Column("hidden", EncryptedString(RING)))
        assert connection.execute(select(pinned.c.hidden)).scalar_one() == "survives renames"
        with pytest.raises(DecryptionError, match=r"enc_renamed\.hidden"):
            connection.execute(select(unpinned.c.hidden)).scalar_one()
        tx.rollback()
    with pytest.raises(ConfigurationError, match=r"table\.column"):
        EncryptedString(RING, bind_to="no_dot")


def test_missing_keyring_at_flush_is_a_configuration_error_before_sql(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SA_PATTERNS_KEYS", raising=False)
    session.add(EnvFlush(id=1, secret="x"))
    with pytest.raises(ConfigurationError, match="SA_PATTERNS_KEYS is not set"):
        session.flush()
    session.rollback()


def test_mixin_columns_get_their_own_binding_and_companion() -> None:
    class B(DeclarativeBase):
        pass

    class Contact:
        email: Mapped[str] = mapped_column(EncryptedString(RING, blind_index=True))

    class Lead(Contact, B):
        __tablename__ = "enc_lead"
        id: Mapped[int] = mapped_column(primary_key=True)

    class Client(Contact, B):
        __tablename__ = "enc_client"
        id: Mapped[int] = mapped_column(primary_key=True)

    lead, client = Lead.__table__.c.email.type, Client.__table__.c.email.type
    assert lead is not client and (lead.where, client.where) == ("enc_lead.email", "enc_client.email")
    assert "email_bidx" in Lead.__table__.c and "email_bidx" in Client.__table__.c
    with pytest.raises(DecryptionError, match=r"enc_client\.email"):
        client.open(lead.seal(b"x"))


def test_a_long_column_name_gets_a_blind_index_within_the_identifier_limit(connection: Any, sql: Any) -> None:
    """The companion's name goes through ident(): a 60-character column still gets a blind index
    column that PostgreSQL keeps whole, and equality finds the row through it."""
    companion = LongName.__table__.c["v" * 60].type.blind_index_name
    assert companion.endswith("_bidx") and len(companion) <= 63
    connection.execute(insert(LongName).values(id=1, value="Ann"))
    connection.execute(insert(LongName).values(id=2, value="Bob"))
    stored = {r[0] for r in sql(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'enc_long_name'::regclass AND attnum > 0"
    )}
    assert stored == {"id", "v" * 60, companion}
    assert connection.scalars(select(LongName.id).where(LongName.value == "Bob")).all() == [2]
    assert sql(f'SELECT count(*) FROM enc_long_name WHERE "{companion}" IS NOT NULL')[0][0] == 2


def test_orm_bulk_update_by_primary_key_keeps_the_blind_index(session: Session) -> None:
    session.add_all([Customer(id=60, email="one@x.io"), Customer(id=61, email="two@x.io")])
    session.flush()
    session.execute(update(Customer), [{"id": 60, "email": "uno@x.io"}, {"id": 61, "name": "no email change"}])
    assert session.scalars(select(Customer.id).where(Customer.email == "uno@x.io")).all() == [60]
    assert session.scalars(select(Customer.id).where(Customer.email == "two@x.io")).all() == [61]
    assert session.scalars(select(Customer.id).where(Customer.email == "one@x.io")).all() == []


async def test_async_orm_bulk_update_keeps_the_blind_index(async_session: AsyncSession) -> None:
    async_session.add(Customer(id=62, email="before@x.io"))
    await async_session.flush()
    await async_session.execute(update(Customer), [{"id": 62, "email": "after@x.io"}])
    assert (await async_session.scalars(select(Customer.id).where(Customer.email == "after@x.io"))).all() == [62]
