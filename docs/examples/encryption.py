"""Encrypted columns: envelopes bound to table.column, a blind index for equality search,
refusals that name the column, and a key rotation while the application keeps running."""

import base64
import datetime as dt
import decimal
import os

from sqlalchemy import URL, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import (
    DecryptionError,
    EncryptedJSON,
    EncryptedString,
    EncryptedValue,
    KeyNotFound,
    Keyring,
)
from sa_patterns.encryption import check_keys, generate_key
from sa_patterns.encryption.rotation import rotate_keys

# In an application the keys live in the environment (or come from a KMS), never in code:
#   SA_PATTERNS_KEYS="k1:<base64 32 bytes>"      SA_PATTERNS_KEYS_INDEX="i1:<base64 32 bytes>"
# Here we make fresh ones so the example is self-contained.
env = {"SA_PATTERNS_KEYS": f"k1:{generate_key()}", "SA_PATTERNS_KEYS_INDEX": f"i1:{generate_key()}"}
keys: dict[str, Keyring] = {}


def keyring() -> Keyring:
    """A deferred provider: models import before keys are loaded; called once, at first use."""
    return keys["current"]


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(
        EncryptedString(keyring, blind_index=True, normalize=("strip", "lower"))
    )
    iban: Mapped[str | None] = mapped_column(EncryptedString(keyring))
    preferences: Mapped[dict | None] = mapped_column(EncryptedJSON(keyring))
    born: Mapped[dt.date | None] = mapped_column(EncryptedValue("date", keyring))
    credit: Mapped[decimal.Decimal | None] = mapped_column(EncryptedValue("decimal", keyring))


def load_keys(environ: dict[str, str]) -> None:
    keys["current"] = Keyring.from_env("SA_PATTERNS_KEYS", environ)
    for column in Customer.__table__.columns:
        if isinstance(column.type, sa_patterns.EncryptedType):
            column.type.reset_keyring()


def main(url: URL) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    Session = sa_patterns.install(sessionmaker(engine))  # blind indexes stay current either way
    load_keys(env)
    check_keys(Base.metadata)  # at start-up: a missing or malformed key fails here, not at row 1

    with Session.begin() as s:
        s.add(Customer(id=1, email="Ada@Example.com", iban="GB33BUKB20201555555555",
                       preferences={"newsletter": True, "langs": ["en", "fr"]},
                       born=dt.date(1815, 12, 10), credit=decimal.Decimal("1200.50")))
        s.add(Customer(id=2, email="grace@example.com"))

    with engine.connect() as conn:
        stored = bytes(conn.execute(text("SELECT iban FROM customers WHERE id = 1")).scalar_one())
    assert stored[:4] == b"\x01\x02k1"  # format version 1, key id "k1", then nonce + ciphertext
    assert b"GB33" not in stored

    with Session() as s:
        ada = s.scalars(select(Customer).where(Customer.email == " ADA@example.com")).one()
        assert ada.iban == "GB33BUKB20201555555555" and ada.preferences["langs"] == ["en", "fr"]
        assert ada.born == dt.date(1815, 12, 10) and ada.credit == decimal.Decimal("1200.50")

    # A ciphertext copied into another column (or table) does not decrypt: it is refused.
    with engine.connect() as conn:
        conn.execute(text("UPDATE customers SET email = iban WHERE id = 1"))
        try:
            conn.execute(select(Customer.email).where(Customer.id == 1)).scalar_one()
            raise AssertionError("a moved ciphertext must not decrypt")
        except DecryptionError as exc:
            assert exc.table == "customers" and exc.column == "email"
        conn.rollback()

    # Rotation, step 1: deploy a new active key first in the list; the old one stays readable.
    rotated = {**env, "SA_PATTERNS_KEYS": f"k2:{generate_key()},{env['SA_PATTERNS_KEYS']}"}
    load_keys(rotated)
    with Session.begin() as s:
        s.add(Customer(id=3, email="linus@example.com"))  # new writes use k2 at once
    # Step 2: re-encrypt the rest (or `sa-patterns rotate-keys --model app.models:Customer`).
    report = rotate_keys(engine, Customer, batch_size=100)
    assert (report.rows, report.remaining) == (2, 0)
    # Step 3: retire k1. Every row still decrypts.
    final = {**rotated, "SA_PATTERNS_KEYS": rotated["SA_PATTERNS_KEYS"].split(",")[0]}
    load_keys(final)
    with Session() as s:
        assert len(s.scalars(select(Customer)).all()) == 3

    # Retiring a key too early is loud, not silent: the row names a key the ring lacks.
    load_keys({"SA_PATTERNS_KEYS": f"k9:{base64.b64encode(os.urandom(32)).decode()}",
               "SA_PATTERNS_KEYS_INDEX": env["SA_PATTERNS_KEYS_INDEX"]})
    with Session() as s:
        try:
            s.scalars(select(Customer.iban)).all()
            raise AssertionError("an unknown key id must raise")
        except KeyNotFound as exc:
            assert exc.key_id == "k2"
    Base.metadata.drop_all(engine)
    engine.dispose()
