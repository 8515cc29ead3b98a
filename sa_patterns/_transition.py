"""Transition tables of the statement-level triggers that ``Audited`` and ``Versioned`` write.

Both triggers take a cheaper path for an UPDATE of one row (an ORM flush): its statements start
up faster than the set-based one that pairs the transition tables, whose start-up is paid on
every statement. :func:`one_row_probe` is the query that decides.
"""

from __future__ import annotations

OLD, NEW = "sa_old", "sa_new"


def one_row_probe(exprs: list[str], into: list[str], rows: str) -> str:
    """plpgsql that reads ``exprs`` over the first old/new pair (aliases ``sa_o`` and ``sa_n``)
    into the variables ``into``, and into ``rows`` the new table's row count up to 2 (1 means
    one row). It returns from the trigger when the UPDATE changed no row."""
    return f"""\
    SELECT {", ".join(exprs)},
           (SELECT count(*) FROM (SELECT FROM {NEW} LIMIT 2) sa_k)
      INTO {", ".join(into)}, {rows}
      FROM {OLD} sa_o, {NEW} sa_n LIMIT 1;
    IF NOT FOUND THEN
      RETURN NULL;  -- no row updated
    END IF;
"""  # noqa: S608  (callers pass quoted identifiers and literals only)
