"""Per-statement opt-outs, named once.

Use them as ``select(Model).execution_options(include_deleted=True)``; read them through the
helpers below so the names are never spelled twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from sqlalchemy.orm import ORMExecuteState

__all__ = ["ALL_TENANTS", "HARD_DELETE", "INCLUDE_DELETED", "flag", "parameter_rows"]

#: Show soft-deleted rows to this statement (and to the loaders it triggers).
INCLUDE_DELETED: Final = "include_deleted"
#: Lift tenant filtering for this statement (deliberate admin work).
ALL_TENANTS: Final = "all_tenants"
#: Really DELETE rows of a soft-deletable model.
HARD_DELETE: Final = "hard_delete"


def flag(state: ORMExecuteState, name: str) -> bool:
    """True when execution option ``name`` is set on the statement or the ``execute()`` call."""
    return bool(state.execution_options.get(name, False))


def parameter_rows(state: ORMExecuteState) -> Sequence[Mapping[Any, Any]] | None:
    """The list of parameter dicts the statement runs with (ORM bulk INSERT, bulk UPDATE or
    DELETE by primary key), or None for a statement run once. Loader criteria do not reach the
    by-primary-key forms: the patterns add their conditions to those themselves."""
    params = state.parameters
    if isinstance(params, Sequence) and not isinstance(params, str) and params:
        return params
    return None
