"""Encrypted columns: a customer whose email (blind-indexed), tax id, profile and birthday are
stored as AES-256-GCM envelopes.

DEMO ONLY: the demo derives its keys from a fixed, public value (``SA_PATTERNS_DEMO_KEY_SEED``,
default below) so that it runs with no set-up. Such keys protect nothing. An application loads
its keys from the environment or a secret store: ``Keyring.from_env("SA_PATTERNS_KEYS")``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from typing import Any

from sqlalchemy.orm import Mapped, mapped_column

from ...encryption import EncryptedJSON, EncryptedString, EncryptedType, EncryptedValue, Keyring
from .base import Base

DEMO_SEED_ENV = "SA_PATTERNS_DEMO_KEY_SEED"
DEMO_SEED_DEFAULT = "sa_patterns demo only: this is not a secret"


def demo_key(name: str) -> bytes:
    """DEMO ONLY: a 32-byte key derived from a public seed (never do this in an application)."""
    seed = os.environ.get(DEMO_SEED_ENV, DEMO_SEED_DEFAULT)
    return hashlib.sha256(f"{seed}/{name}".encode()).digest()


def demo_keyring(*key_ids: str, index: tuple[str, ...] = ("demo-idx-1",)) -> Keyring:
    """DEMO ONLY: a keyring of demo keys, the first one active."""
    return Keyring(
        {k: demo_key(k) for k in key_ids}, index_keys={k: demo_key(k) for k in index}
    )


_current: dict[str, Keyring] = {}


def keyring() -> Keyring:
    """The demo's deferred keyring provider (an application would return its loaded keyring)."""
    if "ring" not in _current:
        _current["ring"] = demo_keyring("demo-k1")
    return _current["ring"]


def use_keyring(ring: Keyring) -> None:
    """Switch the demo's keys, as a redeploy with new key variables would."""
    _current["ring"] = ring
    for column in EncCustomer.__table__.columns:
        if isinstance(column.type, EncryptedType):
            column.type.reset_keyring()


class EncCustomer(Base):
    __tablename__ = "enc_customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    email: Mapped[str] = mapped_column(
        EncryptedString(keyring, blind_index=True, normalize=("strip", "lower"))
    )
    tax_id: Mapped[str | None] = mapped_column(EncryptedString(keyring))
    profile: Mapped[Any] = mapped_column(EncryptedJSON(keyring), nullable=True)
    birthday: Mapped[dt.date | None] = mapped_column(EncryptedValue("date", keyring))
