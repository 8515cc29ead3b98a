"""Encrypted columns: AES-256-GCM envelopes bound to table and column, keyrings with rotation,
and HMAC blind indexes for equality search. See ``docs/encryption.md``."""

from .blind_index import blind_eq as blind_eq
from .blind_index import blind_index_value as blind_index_value
from .keyring import KeyContext as KeyContext
from .keyring import Keyring as Keyring
from .keyring import generate_key as generate_key
from .rotation import RotationReport as RotationReport
from .rotation import rotate_keys as rotate_keys
from .rotation import rotate_keys_async as rotate_keys_async
from .serializers import Serializer as Serializer
from .types import EncryptedBytes as EncryptedBytes
from .types import EncryptedJSON as EncryptedJSON
from .types import EncryptedString as EncryptedString
from .types import EncryptedType as EncryptedType
from .types import EncryptedValue as EncryptedValue
from .verify import check_keys as check_keys

__all__ = [
    "EncryptedBytes",
    "EncryptedJSON",
    "EncryptedString",
    "EncryptedType",
    "EncryptedValue",
    "KeyContext",
    "Keyring",
    "RotationReport",
    "Serializer",
    "blind_eq",
    "blind_index_value",
    "check_keys",
    "generate_key",
    "rotate_keys",
    "rotate_keys_async",
]
