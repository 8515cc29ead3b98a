"""Database objects (extensions, functions, triggers, policies, RLS, views) for patterns and
migrations. Generated migrations reference these classes as ``sa_patterns.schema.<Kind>``."""

from .access import Grant, RoleSetup, SchemaAccess
from .catalog import Diff, diff, read_catalog
from .constraints import TenantReference
from .objects import (
    Entity,
    Extension,
    Function,
    MaterializedView,
    Policy,
    RowLevelSecurity,
    Trigger,
    View,
    ident,
    ident_prefix,
    qualified,
    quote,
    quote_literal,
)
from .registry import NOT_A_TABLE, create_all, drop_all, register, registered

__all__ = [
    "NOT_A_TABLE",
    "Diff",
    "Entity",
    "Extension",
    "Function",
    "Grant",
    "MaterializedView",
    "Policy",
    "RoleSetup",
    "RowLevelSecurity",
    "SchemaAccess",
    "TenantReference",
    "Trigger",
    "View",
    "create_all",
    "diff",
    "drop_all",
    "ident",
    "ident_prefix",
    "qualified",
    "quote",
    "quote_literal",
    "read_catalog",
    "register",
    "registered",
]
