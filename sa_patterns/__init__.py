"""sa_patterns: production data patterns for SQLAlchemy 2.x on PostgreSQL.

Subclass the mixins in your models, call :func:`install` once on your session factory, and let
``alembic revision --autogenerate`` (with :mod:`sa_patterns.alembic` in ``env.py``) write the
supporting DDL. Importing this package registers nothing and changes nothing.
"""

from .audit import Audited as Audited
from .audit import audit_entries as audit_entries
from .context import actor_scope as actor_scope
from .context import all_tenants as all_tenants
from .context import current_actor as current_actor
from .context import current_tenant as current_tenant
from .context import tenant_scope as tenant_scope
from .encryption import EncryptedBytes as EncryptedBytes
from .encryption import EncryptedJSON as EncryptedJSON
from .encryption import EncryptedString as EncryptedString
from .encryption import EncryptedType as EncryptedType
from .encryption import EncryptedValue as EncryptedValue
from .encryption import Keyring as Keyring
from .encryption import blind_eq as blind_eq
from .encryption import check_keys as check_keys
from .errors import BackfillError as BackfillError
from .errors import ConcurrencyConflict as ConcurrencyConflict
from .errors import ConfigurationError as ConfigurationError
from .errors import ConflictError as ConflictError
from .errors import DatabaseWallDown as DatabaseWallDown
from .errors import DatabaseWallWarning as DatabaseWallWarning
from .errors import DecryptionError as DecryptionError
from .errors import ForeignKeyViolation as ForeignKeyViolation
from .errors import IntegrityViolation as IntegrityViolation
from .errors import InvalidCursor as InvalidCursor
from .errors import InvalidData as InvalidData
from .errors import KeyNotFound as KeyNotFound
from .errors import MissingGrant as MissingGrant
from .errors import NotFound as NotFound
from .errors import NPlusOneDetected as NPlusOneDetected
from .errors import SAPatternsError as SAPatternsError
from .errors import TenantRequired as TenantRequired
from .errors import TenantViolation as TenantViolation
from .eventsourcing import Aggregate as Aggregate
from .eventsourcing import AsyncEventStore as AsyncEventStore
from .eventsourcing import AsyncProjectionRunner as AsyncProjectionRunner
from .eventsourcing import CheckpointMixin as CheckpointMixin
from .eventsourcing import EventMixin as EventMixin
from .eventsourcing import EventRegistry as EventRegistry
from .eventsourcing import EventStore as EventStore
from .eventsourcing import Projection as Projection
from .eventsourcing import ProjectionRunner as ProjectionRunner
from .eventsourcing import RecordedEvent as RecordedEvent
from .eventsourcing import SnapshotMixin as SnapshotMixin
from .eventsourcing import VersionConflict as VersionConflict
from .install import install as install
from .install import uninstall as uninstall
from .integrity import get_or_404 as get_or_404
from .integrity import get_or_404_async as get_or_404_async
from .integrity import one_or_404 as one_or_404
from .integrity import one_or_404_async as one_or_404_async
from .integrity import translate as translate
from .nplusone import count_queries as count_queries
from .nplusone import nplusone_guard as nplusone_guard
from .pagination import Page as Page
from .pagination import paginate as paginate
from .pagination import paginate_async as paginate_async
from .partitioning import Partitioned as Partitioned
from .partitioning import hash_partition as hash_partition
from .partitioning import list_partition as list_partition
from .partitioning import range_partition as range_partition
from .querylog import log_queries as log_queries
from .schema.registry import create_all as create_all
from .schema.registry import drop_all as drop_all
from .search import Searchable as Searchable
from .soft_delete import SoftDeleteMixin as SoftDeleteMixin
from .soft_delete import hard_delete as hard_delete
from .soft_delete import soft_unique as soft_unique
from .tenancy import TenantMixin as TenantMixin
from .tenancy import tenant_foreign_key as tenant_foreign_key
from .tenancy import tenant_unique as tenant_unique
from .transactions import transaction as transaction
from .typed_json import TypedJSON as TypedJSON
from .upsert import insert_many as insert_many
from .upsert import insert_many_async as insert_many_async
from .versioning import Versioned as Versioned
from .versioning import as_of as as_of
from .versioning import history as history
from .versioning import revert as revert
from .views import MaterializedView as MaterializedView
from .views import View as View
from .views import refresh_all as refresh_all

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "AsyncEventStore",
    "AsyncProjectionRunner",
    "Audited",
    "BackfillError",
    "CheckpointMixin",
    "ConcurrencyConflict",
    "ConfigurationError",
    "ConflictError",
    "DatabaseWallDown",
    "DatabaseWallWarning",
    "DecryptionError",
    "EncryptedBytes",
    "EncryptedJSON",
    "EncryptedString",
    "EncryptedType",
    "EncryptedValue",
    "EventMixin",
    "EventRegistry",
    "EventStore",
    "ForeignKeyViolation",
    "IntegrityViolation",
    "InvalidCursor",
    "InvalidData",
    "KeyNotFound",
    "Keyring",
    "MaterializedView",
    "MissingGrant",
    "NPlusOneDetected",
    "NotFound",
    "Page",
    "Partitioned",
    "Projection",
    "ProjectionRunner",
    "RecordedEvent",
    "SAPatternsError",
    "Searchable",
    "SnapshotMixin",
    "SoftDeleteMixin",
    "TenantMixin",
    "TenantRequired",
    "TenantViolation",
    "TypedJSON",
    "VersionConflict",
    "Versioned",
    "View",
    "actor_scope",
    "all_tenants",
    "as_of",
    "audit_entries",
    "blind_eq",
    "check_keys",
    "count_queries",
    "create_all",
    "current_actor",
    "current_tenant",
    "drop_all",
    "get_or_404",
    "get_or_404_async",
    "hard_delete",
    "hash_partition",
    "history",
    "insert_many",
    "insert_many_async",
    "install",
    "list_partition",
    "log_queries",
    "nplusone_guard",
    "one_or_404",
    "one_or_404_async",
    "paginate",
    "paginate_async",
    "range_partition",
    "refresh_all",
    "revert",
    "soft_unique",
    "tenant_foreign_key",
    "tenant_scope",
    "tenant_unique",
    "transaction",
    "translate",
    "uninstall",
]
