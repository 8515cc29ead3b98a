"""The stored form of an encrypted value, and the one object that writes and reads it.

Layout (all lengths in bytes)::

    0x01 | len(key_id) (1) | key_id (ASCII, 1-64) | nonce (12) | ciphertext + GCM tag (16)

* The **format version** comes first so a future layout can be read next to this one.
* The **key id** names the keyring entry that sealed the value: any key of the keyring reads,
  only the active one writes, and rotation finds the rows still sealed by an old key.
* The **nonce** is 96 random bits per value (``os.urandom``), the size GCM is built for; with
  random nonces one key should seal fewer than 2**32 values, which rotation resets.
* The **associated data** is the header (version + key id) followed by the *binding* (by default
  ``table.column``, see :func:`binding`). GCM authenticates it without storing it, so a value
  moved to another column, a rewritten key id or a flipped bit fails the tag check instead of
  decrypting to something else.

:class:`Sealer` owns this layout: sealing, opening, and the pre-computed pieces the column
types' processors use on their hot path. Nothing else builds or parses an envelope.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from .keyring import Keyring

__all__ = [
    "FORMAT_VERSION",
    "NONCE_SIZE",
    "TAG_SIZE",
    "EnvelopeError",
    "Sealer",
    "Unauthentic",
    "UnknownKey",
    "binding",
    "header",
    "key_id_of",
]

FORMAT_VERSION: Final = 1
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
_VERSION_BYTE: Final = bytes([FORMAT_VERSION])


class EnvelopeError(ValueError):
    """Internal: the bytes are not an envelope this version can read (the type adds context)."""


class Unauthentic(EnvelopeError):
    """Internal: the GCM tag does not match (altered, moved, or another key under the same id)."""


class UnknownKey(EnvelopeError):
    """Internal: the envelope names a key id the keyring does not hold."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"key id {key_id!r} is not in the keyring")
        self.key_id = key_id


def binding(table: str, column: str) -> bytes:
    """The associated data that ties a value to its place: ``sa_patterns:<table>.<column>``.

    The schema is left out on purpose, so moving a table between schemas (or restoring a dump
    into another one) keeps every value readable.
    """
    return f"sa_patterns:{table}.{column}".encode()


def header(key_id: str) -> bytes:
    """Version byte, key id length and key id: the envelope's plaintext prefix."""
    raw = key_id.encode("ascii")
    return _VERSION_BYTE + bytes([len(raw)]) + raw


def key_id_of(value: bytes) -> tuple[str, int]:
    """The key id of an envelope and the offset where its nonce starts."""
    if len(value) < 3 or value[0] != FORMAT_VERSION:
        if value[:1] and value[0] != FORMAT_VERSION:
            raise EnvelopeError(f"unknown envelope format version {value[0]}")
        raise EnvelopeError("value is too short to be an envelope")
    end = 2 + value[1]
    if value[1] == 0 or len(value) < end + NONCE_SIZE + TAG_SIZE:
        raise EnvelopeError("value is truncated (shorter than its header, nonce and tag)")
    try:
        return value[2:end].decode("ascii"), end
    except UnicodeDecodeError:
        raise EnvelopeError("the key id is not ASCII: not an envelope") from None


class Sealer:
    """Seals and opens the envelopes of one place (``binding``) under one keyring.

    Everything per key is looked up once here: the header, the cipher and the associated data.
    ``sealing`` and ``active`` / ``openers`` are those pieces as tuples, for the column types'
    processors, which inline the two GCM calls instead of calling :meth:`seal` / :meth:`open`.
    """

    __slots__ = ("active", "openers", "ring", "sealing")

    def __init__(self, ring: Keyring, place: bytes) -> None:
        self.ring = ring
        prefix = ring.header(ring.active)
        aead = ring.aead(ring.active)
        aad = prefix + place
        #: (header, cipher, associated data) of the active key
        self.sealing: tuple[bytes, AESGCM, bytes] = (prefix, aead, aad)
        #: (header, nonce offset, cipher, associated data) of the active key
        self.active: tuple[bytes, int, AESGCM, bytes] = (prefix, len(prefix), aead, aad)
        #: key id (ASCII bytes) -> (cipher, associated data, nonce offset), every key of the ring
        self.openers: dict[bytes, tuple[AESGCM, bytes, int]] = {
            key_id.encode("ascii"): (ring.aead(key_id), ring.header(key_id) + place, 2 + len(key_id))
            for key_id in ring.key_ids
        }

    def seal(self, plaintext: bytes) -> bytes:
        """An envelope of ``plaintext`` under the active key, with a fresh random nonce."""
        prefix, aead, aad = self.sealing
        nonce = os.urandom(NONCE_SIZE)
        return prefix + nonce + aead.encrypt(nonce, plaintext, aad)

    def open(self, value: bytes) -> bytes:
        """The plaintext of an envelope; :class:`EnvelopeError` (:class:`UnknownKey` for a key
        id the ring lacks) when it cannot be authenticated."""
        key_id, start = key_id_of(value)
        opener = self.openers.get(key_id.encode("ascii"))
        if opener is None:
            raise UnknownKey(key_id)
        aead, aad, _ = opener
        try:
            return aead.decrypt(value[start : start + NONCE_SIZE], value[start + NONCE_SIZE :], aad)
        except InvalidTag:
            raise Unauthentic(
                "authentication failed: the value was altered, copied from another column or "
                "table, or sealed with a different key under the same id"
            ) from None
