"""Per-statement opt-outs, named once.

Use them as ``select(Model).execution_options(include_deleted=True)``; read them through the
helpers below so the names are never spelled twice.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.orm import ORMExecuteState

__all__ = ["ALL_TENANTS", "HARD_DELETE", "INCLUDE_DELETED", "flag"]

#: Show soft-deleted rows to this statement (and to the loaders it triggers).
INCLUDE_DELETED: Final = "include_deleted"
#: Lift tenant filtering for this statement (deliberate admin work).
ALL_TENANTS: Final = "all_tenants"
#: Really DELETE rows of a soft-deletable model.
HARD_DELETE: Final = "hard_delete"


def flag(state: ORMExecuteState, name: str) -> bool:
    """True when execution option ``name`` is set on the statement or the ``execute()`` call."""
    return bool(state.execution_options.get(name, False))
