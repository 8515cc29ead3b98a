"""The stored form of an encrypted value: a small, versioned AES-256-GCM envelope.

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
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "FORMAT_VERSION",
    "NONCE_SIZE",
    "TAG_SIZE",
    "EnvelopeError",
    "binding",
    "header",
    "key_id_of",
    "open_envelope",
]

FORMAT_VERSION: Final = 1
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
_VERSION_BYTE: Final = bytes([FORMAT_VERSION])


class EnvelopeError(ValueError):
    """Internal: the bytes are not an envelope this version can read (the type adds context)."""


def binding(table: str, column: str) -> bytes:
    """The associated data that ties a value to its place: ``sa_patterns:<table>.<column>``.

    The schema is left out on purpose, so moving a table between schemas (or restoring a dump
    into another one) keeps every value readable.
    """
    return f"sa_patterns:{table}.{column}".encode()


def header(key_id: str) -> bytes:
    """Version byte, key id length and key id: the envelope's plaintext prefix, followed by the
    nonce and ``AESGCM.encrypt(nonce, plaintext, header + binding)`` (see ``EncryptedType.seal``)."""
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


def open_envelope(aead: AESGCM, value: bytes, start: int, aad: bytes) -> bytes:
    """Decrypt the part of ``value`` after the header; raises :class:`EnvelopeError`."""
    try:
        return aead.decrypt(value[start : start + NONCE_SIZE], value[start + NONCE_SIZE :], aad)
    except InvalidTag:
        raise EnvelopeError(
            "authentication failed: the value was altered, copied from another column or "
            "table, or sealed with a different key under the same id"
        ) from None
