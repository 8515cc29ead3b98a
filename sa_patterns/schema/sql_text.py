"""SQL text layout: long lines wrapped for reading, and a form that ignores layout for comparing.

Generated function bodies go into migrations, where a reviewer reads them and a diff shows what
changed; one 700-character line of column lists shows neither. :func:`wrap` breaks such lines
only where SQL allows any whitespace (never inside a string, a quoted name, a dollar-quoted
block or a comment), so the code means the same. PostgreSQL stores a function's body verbatim,
so a database migrated before the layout changed holds other text for the same code:
:func:`layout_free` is the form both compare equal in (whitespace between tokens dropped, a
single space kept only where two words meet), so a layout change is never a diff.
"""

from __future__ import annotations

import re

__all__ = ["WIDTH", "layout_free", "wrap"]

#: the longest line :func:`wrap` leaves, where SQL lets it break the line
WIDTH = 100

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")
_WORD = re.compile(r"[A-Za-z_0-9$]")


def _quoted(sql: str) -> list[tuple[int, int, bool]]:
    """The spans of ``sql`` that are not code: literals, quoted names, dollar-quoted blocks and
    comments, as ``(start, end, is_line_comment)``."""
    spans: list[tuple[int, int, bool]] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        end, line_comment = -1, False
        if c in "'\"":
            escapes = c == "'" and i > 0 and sql[i - 1] in "eE"  # E'...\'...'
            end = i + 1
            while end < n:
                if escapes and sql[end] == "\\":
                    end += 2
                    continue
                if sql[end] == c:
                    if end + 1 < n and sql[end + 1] == c:  # a doubled quote: still inside
                        end += 2
                        continue
                    break
                end += 1
            end = min(end + 1, n)
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            end, line_comment = (n if newline < 0 else newline), True
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            end = n if close < 0 else close + 2
        elif c == "$" and (i == 0 or not _WORD.match(sql[i - 1])):
            tag = _DOLLAR.match(sql, i)
            if tag:
                close = sql.find(tag.group(0), tag.end())
                end = n if close < 0 else close + len(tag.group(0))
        if end > i:
            spans.append((i, end, line_comment))
            i = end
        else:
            i += 1
    return spans


def _code(sql: str) -> list[bool]:
    """For each character, whether it is code (not inside a literal, quoted name or comment)."""
    mask = [True] * len(sql)
    for start, end, _ in _quoted(sql):
        mask[start:end] = [False] * (end - start)
    return mask


def wrap(sql: str, width: int = WIDTH) -> str:
    """``sql`` with each line longer than ``width`` broken where whitespace is free (after a
    comma when one is near the limit), continuation lines indented four more spaces, and
    trailing spaces dropped (a migration's text block cannot hold them).

    Idempotent, and the code is unchanged: only whitespace outside literals and comments is
    touched.
    """
    mask = _code(sql)
    out: list[str] = []
    start = 0
    for line in sql.split("\n"):
        out.append(_wrap_line(line, mask[start : start + len(line)], width))
        start += len(line) + 1
    return "\n".join(out)


def _wrap_line(line: str, mask: list[bool], width: int) -> str:
    end = len(line)
    while end and line[end - 1] in " \t" and mask[end - 1]:  # trailing layout goes
        end -= 1
    line = line[:end]
    if len(line) <= width:
        return line
    indent = len(line) - len(line.lstrip(" "))
    pad = " " * (indent + 4)
    pieces: list[str] = []
    begin, limit = 0, width
    while len(line) - begin > limit:
        spaces = [
            i for i in range(begin + 1, begin + limit + 1)
            if i < len(line) and line[i] == " " and mask[i] and line[i - 1] != " "
        ]
        if not spaces:  # nothing free before the limit: the first free space after it
            spaces = [i for i in range(begin + limit + 1, len(line)) if line[i] == " " and mask[i]][:1]
            if not spaces:
                break
        commas = [i for i in spaces if line[i - 1] == "," and i - begin > limit // 2]
        cut = (commas or spaces)[-1]
        rest = cut
        while rest < len(line) and line[rest] == " " and mask[rest]:
            rest += 1
        if rest == len(line):
            break
        pieces.append(line[begin:cut])
        begin, limit = rest, width - len(pad)
    pieces.append(line[begin:])
    return ("\n" + pad).join(pieces)


def layout_free(sql: str) -> str:
    """``sql`` without layout: whitespace outside literals and comments dropped, or one space
    where it separates two words (``a b``, not ``a,b``). Two texts that differ only in layout
    (:func:`wrap`, indentation, line breaks) give the same result."""
    out: list[str] = []
    position = 0
    for start, end, line_comment in [*_quoted(sql), (len(sql), len(sql), False)]:
        out.append(_squeeze(sql[position:start], out[-1][-1:] if out else ""))
        out.append(sql[start:end])
        if line_comment:
            out.append("\n")  # a line comment ends at the line break: keep one
        position = end
    return "".join(out)


def _squeeze(code: str, before: str) -> str:
    """``code`` (no literal inside) with each run of whitespace dropped, or one space where it
    separates two words."""

    def space(match: re.Match[str]) -> str:
        left = code[match.start() - 1] if match.start() else before
        right = code[match.end() : match.end() + 1]
        return " " if _WORD.match(left) and _WORD.match(right) else ""

    return re.sub(r"\s+", space, code)
