"""``sa_patterns.schema.sql_text``: :func:`wrap` breaks long lines only where SQL allows any
whitespace, so PostgreSQL runs the wrapped body exactly as the original; :func:`layout_free`
is what bodies are compared by, equal across layouts and different across code."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import render_python_code
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.operations.ops import UpgradeOps
from sqlalchemy import Connection, text

import sa_patterns.alembic  # noqa: F401  (registers the operations and their renderers)
from sa_patterns.alembic.ops import CreateEntityOp
from sa_patterns.schema import Function
from sa_patterns.schema.sql_text import layout_free, wrap

# strings, a quoted name, a dollar-quoted block, an E'' string with an escaped quote and both
# kinds of comment, all on lines far longer than the width
BODY = (
    "DECLARE\n"
    '  "odd  name" text := \'a   literal,  with , commas   and -- no comment\';\n'
    "BEGIN\n"
    "  RETURN concat_ws('|', \"odd  name\", $t$ dollar  quoted, -- kept $t$, E'it\\'s  escaped, too',"
    " /* a block  comment, */ 'x  y', upper('one, two'), lower('THREE,   FOUR'), 'five' || ' six'"
    ", 'seven') -- a line comment, with commas, that runs past the width\n"
    "    || ', end';\n"
    "END;"
)


def create(connection: Connection, name: str, body: str) -> str:
    function = Function(None, name, returns="text", body=body)
    connection.exec_driver_sql(function.create_sql()[0])
    return str(connection.execute(text(f"SELECT {name}()")).scalar_one())


def test_the_wrapped_body_runs_as_the_original(connection: Connection) -> None:
    wrapped = wrap(BODY, 40)
    assert wrapped != BODY and wrap(wrapped, 40) == wrapped  # changed once, then stable
    assert "a   literal,  with , commas   and -- no comment" in wrapped  # strings untouched
    assert "$t$ dollar  quoted, -- kept $t$" in wrapped
    assert "-- a line comment, with commas, that runs past the width\n" in wrapped
    code_lines = [line for line in wrapped.splitlines() if "'" not in line and "$" not in line and "--" not in line]
    assert all(len(line) <= 40 for line in code_lines)
    expected = create(connection, "layout_original", BODY)
    assert create(connection, "layout_wrapped", wrapped) == expected
    assert expected.startswith("a   literal,  with , commas   and -- no comment|")
    stored = connection.execute(text("SELECT prosrc FROM pg_proc WHERE proname = 'layout_wrapped'")).scalar_one()
    assert stored == "\n" + wrapped + "\n"  # PostgreSQL keeps the text as given


def test_layout_free_tells_layout_from_code() -> None:
    assert layout_free(wrap(BODY, 40)) == layout_free(BODY)
    assert layout_free("\n".join(line.strip() for line in BODY.splitlines())) == layout_free(BODY)
    assert layout_free(BODY.replace("'x  y'", "'x y'")) != layout_free(BODY)  # inside a string
    assert layout_free(BODY.replace("upper(", "lower(")) != layout_free(BODY)
    assert layout_free("RETURN a -- b\n+ c") != layout_free("RETURN a -- b + c")  # the comment ends
    assert layout_free("SELECT a b") != layout_free("SELECT ab")


def test_trailing_spaces_go_but_not_inside_a_string(connection: Connection) -> None:
    """SQLAlchemy ends a view's select list with a space; a migration's text block cannot keep
    one, so wrap() drops it, never inside a string."""
    sql = "SELECT 'a  \n  b' AS x, 1 AS y \nFROM (SELECT 1) AS t   "
    assert wrap(sql) == "SELECT 'a  \n  b' AS x, 1 AS y\nFROM (SELECT 1) AS t"
    assert connection.execute(text(wrap(sql))).one() == ("a  \n  b", 1)


BODIES = {
    "rendered_block": "BEGIN\n  RETURN 'a string\n  over two lines';\nEND;",
    "rendered_trailing": "BEGIN   \n  RETURN 'ends in spaces   ';\nEND;",  # a text block would lose them
    "rendered_indented": "  BEGIN\n    RETURN E'a\\\\tb';\n  END;",  # a backslash, no line at column 0
}


def test_the_rendered_migration_gives_each_body_back_exactly(connection: Connection) -> None:
    """Through Alembic's own rendering (which indents every line and strips trailing spaces):
    a text block where it is exact, ``'...\\n'`` pieces where it would not be; run for real."""
    functions = [Function(None, name, returns="text", body=body) for name, body in BODIES.items()]
    code = render_python_code(UpgradeOps([CreateEntityOp(f) for f in functions]))
    assert code.count('body=textwrap.dedent("""\\') == 1
    script = "import textwrap\nimport sa_patterns.schema\n\n\ndef upgrade(op):\n    " + code
    namespace: dict[str, Any] = {}
    exec(compile(script, "migration", "exec"), namespace)  # the rendered migration, run
    namespace["upgrade"](Operations(MigrationContext.configure(connection)))
    stored = dict(connection.execute(text(
        "SELECT proname, prosrc FROM pg_proc WHERE proname LIKE 'rendered\\_%' "
        "AND pronamespace = CAST(current_schema() AS regnamespace)")).all())
    assert stored == {name: "\n" + body + "\n" for name, body in BODIES.items()}
    assert connection.execute(text("SELECT rendered_trailing(), rendered_indented()")).one() == (
        "ends in spaces   ", "a\\tb")
