"""Property tests: no byte string other than a genuine envelope decrypts, and every refusal is
a DecryptionError (never InvalidTag, UnicodeDecodeError, IndexError or garbage)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_patterns import DecryptionError, EncryptedJSON, EncryptedString, EncryptedValue, Keyring

RING = Keyring({"k1": os.urandom(32), "k2": os.urandom(32)})


class Base(DeclarativeBase):
    pass


class Fuzz(Base):
    __tablename__ = "enc_fuzz"
    id: Mapped[int] = mapped_column(primary_key=True)
    text_: Mapped[str | None] = mapped_column("text", EncryptedString(RING))
    doc: Mapped[Any] = mapped_column(EncryptedJSON(RING), nullable=True)
    day: Mapped[Any] = mapped_column(EncryptedValue("date", RING), nullable=True)


TYPES = [Fuzz.__table__.c[name].type for name in ("text", "doc", "day")]
VALID = TYPES[0].seal(b"a genuine value")
DIALECT = postgresql.psycopg.dialect()
# What SQLAlchemy really calls per row: the dialect-level result processors (the fast path).
PROCESSORS = [t.dialect_impl(DIALECT).result_processor(DIALECT, None) for t in TYPES]


def refused(value: bytes) -> None:
    for type_, processor in zip(TYPES, PROCESSORS, strict=True):
        for decrypt in (lambda v: type_.process_result_value(v, None), processor):  # noqa: B023
            with pytest.raises(DecryptionError) as info:
                decrypt(value)
            assert info.value.table == "enc_fuzz" and info.value.column in ("text", "doc", "day")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_decrypt(value: bytes) -> None:
    refused(value)


def test_the_fast_path_still_decrypts_genuine_values() -> None:
    assert PROCESSORS[0](VALID) == "a genuine value"


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([b"\x01\x02k1", b"\x01\x02k2", b"\x01\x02k3", b"\x01\x00", b"\x02\x02k1", b"\x01\xff"]),
    st.binary(max_size=120),
)
def test_random_bytes_behind_a_plausible_header_never_decrypt(prefix: bytes, rest: bytes) -> None:
    refused(prefix + rest)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_of_a_real_envelope_is_refused(position: int, delta: int) -> None:
    tampered = bytearray(VALID)
    tampered[position % len(VALID)] = (tampered[position % len(VALID)] + delta) % 256
    with pytest.raises(DecryptionError):
        PROCESSORS[0](bytes(tampered))


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID) - 1))
def test_every_truncation_is_refused(length: int) -> None:
    with pytest.raises(DecryptionError):
        PROCESSORS[0](VALID[:length])


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata  # built by the owner role; the session is the app role's


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=100))
def test_random_bytes_in_the_database_raise_decryption_error(session: Session, value: bytes) -> None:
    session.execute(Fuzz.__table__.delete())
    session.connection().exec_driver_sql(
        "INSERT INTO enc_fuzz (id, text, doc, day) VALUES (1, %(v)s, %(v)s, %(v)s)", {"v": value}
    )
    for column in (Fuzz.text_, Fuzz.doc, Fuzz.day):
        with pytest.raises(DecryptionError):
            session.execute(select(column)).scalar_one()
    session.rollback()
