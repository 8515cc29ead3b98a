"""Transaction-local settings that travel with the next statement, in the same round trip.

The context (tenant, actor, request) must reach PostgreSQL before the statements that read it,
but a ``SELECT set_config(...)`` of its own costs a round trip per transaction, and one more per
tenant switch. With psycopg 3 the settings instead wait on the connection until its next
statement, then both are sent in one pipeline (psycopg's pipeline mode: one network round trip,
executed in order, the statement's result read as usual). ``do_execute`` and its siblings are
the public dialect events SQLAlchemy offers for running a cursor's statement yourself; they are
listened to on the engine's dialect, once, when a session of that engine first defers settings,
and they do nothing while nothing waits.

Where pipelining is not available (psycopg's async connections through SQLAlchemy's adapter, a
server-side cursor, another driver) the settings are sent at once, as their own statement. A
DBAPI cursor used directly, bypassing SQLAlchemy, sees them once a SQLAlchemy statement ran.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Dialect

__all__ = ["defer_settings", "discard_settings", "settings_sql"]

# what waits on each connection (a later deferral replaces it: it holds every setting)
_waiting: weakref.WeakKeyDictionary[Connection, dict[str, str]] = weakref.WeakKeyDictionary()
_listening: weakref.WeakSet[Dialect] = weakref.WeakSet()


def settings_sql(settings: Mapping[str, str], *, named: bool) -> tuple[str, dict[str, str]]:
    """``SELECT set_config(name, value, true), ...`` with every name and value bound."""
    sql, keys = _template(len(settings), named)
    params: dict[str, str] = {}
    for (name_key, value_key), (name, value) in zip(keys, settings.items(), strict=True):
        params[name_key], params[value_key] = name, value
    return sql, params


@functools.cache
def _template(count: int, named: bool) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The SQL text and parameter names for ``count`` settings: built once, not per send."""
    keys = tuple((f"sap_n{i}", f"sap_v{i}") for i in range(count))
    calls = [
        f"set_config(:{n}, :{v}, true)" if named else f"set_config(%({n})s, %({v})s, true)"
        for n, v in keys
    ]
    return "SELECT " + ", ".join(calls), keys


def defer_settings(connection: Connection, settings: Mapping[str, str]) -> None:
    """Set ``settings`` (transaction-local) before ``connection``'s next statement."""
    dialect = connection.dialect
    if dialect.is_async or dialect.driver != "psycopg":
        sql, params = settings_sql(settings, named=True)
        connection.execute(text(sql), params)
        return
    if dialect not in _listening:
        _listening.add(dialect)
        event.listen(dialect, "do_execute", _do_execute)
        event.listen(dialect, "do_executemany", _do_executemany)
        event.listen(dialect, "do_execute_no_params", _do_execute_no_params)
    _waiting[connection] = dict(settings)


def discard_settings(connection: Connection) -> None:
    """The transaction ended before its next statement: nothing is owed."""
    _waiting.pop(connection, None)


def _run_with(cursor: Any, context: Any, run: Any, *, own_cursor: bool = True) -> bool | None:
    if not _waiting:
        return None  # nothing waits on any connection: most statements
    settings = _waiting.pop(context.root_connection, None)
    if settings is None:
        return None
    sql, params = settings_sql(settings, named=False)
    raw = cursor.connection
    if getattr(cursor, "name", None):  # a server-side cursor cannot run inside a pipeline
        raw.execute(sql, params)
        return None
    with raw.pipeline():
        # On the statement's own cursor, whose result the statement's then replaces: no second
        # cursor (about 20,000 fewer instructions per send). Not before an executemany, whose
        # rowcount and returned rows a pipeline would add the set_config's to.
        (cursor if own_cursor else raw).execute(sql, params)
        run()
    return True


def _do_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
    return _run_with(cursor, context, lambda: cursor.execute(statement, parameters))


def _do_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
    return _run_with(
        cursor, context, lambda: cursor.executemany(statement, parameters), own_cursor=False
    )


def _do_execute_no_params(cursor: Any, statement: str, context: Any) -> bool | None:
    return _run_with(cursor, context, lambda: cursor.execute(statement))
