"""How the toolkit's objects read in a migration: a constructor call with one argument per line,
multi-line SQL as a triple-quoted block, long one-line SQL as adjacent string pieces.

A reviewer reads the function bodies and a diff shows which lines changed. The text is still
exactly the object's value (the migration freezes the SQL it was generated with): Alembic
indents every line of the script by four spaces and strips trailing spaces, so a block is
written as ``textwrap.dedent(\"\"\"...\"\"\")`` and used only when that gives the value back
exactly; any other string is written as ``'...\\n'`` pieces, one per line.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

from ..schema.objects import Entity

__all__ = ["WIDTH", "comment_lines", "entity_call", "pieces"]

#: the line length the renderer keeps to (Alembic then indents the script four spaces)
WIDTH = 100


def entity_call(entity: Entity, module: str, imports: set[str], indent: int = 0, lead: int = 0) -> str:
    """``module.Kind(field=value, ...)`` on one line when it fits; else the leading short
    fields (the object's name) on the first line and the others one per line below, the closing
    parenthesis at ``indent``. ``lead``: the length of what precedes the call on its first line
    (``op.create_entity(``)."""
    name = f"{module}.{type(entity).__name__}("
    fields = [(f.name, getattr(entity, f.name)) for f in dataclasses.fields(entity) if f.init]
    whole = name + ", ".join(f"{k}={v!r}" for k, v in fields) + ")"
    room = WIDTH - indent - lead - 1  # the op's closing parenthesis or a comma follows
    if len(whole) <= room and "\n" not in whole:
        return whole
    first, rest = name, fields
    while rest and _short(rest[0][1]) and len(first) + len(f"{rest[0][0]}={rest[0][1]!r},") <= room:
        first += f"{rest[0][0]}={rest[0][1]!r}, "
        rest = rest[1:]
    pad = " " * (indent + 4)
    lines = [first.rstrip()]
    lines += [f"{pad}{k}={_value(v, indent + 4, imports)}," for k, v in rest]
    lines.append(" " * indent + ")")
    return "\n".join(lines)


def _short(value: Any) -> bool:
    return value is None or isinstance(value, bool | int) or (isinstance(value, str) and "\n" not in value)


def comment_lines(text: str, first: str, width: int = WIDTH) -> list[str]:
    """``text`` (on one line, whatever it holds) as ``#`` comment lines, the first starting with
    ``first``."""
    flat = " ".join(text.split())
    return textwrap.wrap(f"{first}{flat}", width, initial_indent="# ", subsequent_indent="#   ",
                         break_long_words=False, break_on_hyphens=False)


def _value(value: Any, indent: int, imports: set[str]) -> str:
    if isinstance(value, str):
        return _string(value, indent, imports)
    if isinstance(value, tuple) and value:
        inline = repr(value)
        if indent + len(inline) <= WIDTH - 20 and "\n" not in inline:
            return inline
        pad = " " * (indent + 4)
        items = "".join(f"{pad}{_value(v, indent + 4, imports)},\n" for v in value)
        return f"(\n{items}{' ' * indent})"
    return repr(value)


def _string(value: str, indent: int, imports: set[str]) -> str:
    if "\n" in value:
        block = _block(value, indent)
        if block is not None:
            imports.add("import textwrap")
            return block
        lines = [line + "\n" for line in value.split("\n")]
        lines[-1] = lines[-1][:-1]
        return _pieces([line for line in lines if line], indent)
    inline = repr(value)
    if indent + len(inline) <= WIDTH - 20:
        return inline
    return _pieces(pieces(value, max(WIDTH - indent - 8, 20)), indent)


def pieces(value: str, room: int) -> list[str]:
    """``value`` cut at spaces into pieces of about ``room`` characters (joined, the same
    string: each space stays at the end of its piece)."""
    parts = textwrap.wrap(value, room, drop_whitespace=False, break_long_words=False,
                          break_on_hyphens=False, replace_whitespace=False, expand_tabs=False)
    return parts if "".join(parts) == value else [value]


def _pieces(parts: list[str], indent: int) -> str:
    if len(parts) <= 1:
        return repr("".join(parts))
    pad = " " * (indent + 4)
    return "(\n" + "".join(f"{pad}{part!r}\n" for part in parts) + " " * indent + ")"


def _block(value: str, indent: int) -> str | None:
    """``textwrap.dedent(\"\"\"\\`` + the lines indented + ``\"\"\")``, or ``None`` when that would
    not give ``value`` back exactly once Alembic has indented and right-stripped the lines."""
    if "\\" in value or '"""' in value or value.endswith('"'):
        return None
    if not all(ch.isprintable() or ch in "\n\t" for ch in value):
        return None
    pad = " " * (indent + 4)
    lines = [pad + line if line else "" for line in value.split("\n")]
    # what Python reads back from the script: four more spaces, trailing spaces stripped (but
    # the last line's, which the closing quotes follow)
    read = [("    " + line).rstrip(" ") for line in lines[:-1]] + ["    " + lines[-1]]
    if textwrap.dedent("\n".join(read)) != value:
        return None
    return 'textwrap.dedent("""\\\n' + "\n".join(lines) + '""")'
