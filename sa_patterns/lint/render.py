"""Each revision's SQL as Alembic's offline mode writes it (``alembic upgrade a:b --sql``), with
every statement traced to the line of the revision file that emitted it.

The trace reads the call stack when Alembic writes a statement to the output buffer: the frame
running inside a revision file names the ``op.*`` line. So the toolkit's own operations appear as
the SQL they run, and a finding points at the operation that caused it, not at generated SQL.
"""

from __future__ import annotations

import inspect
import io
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.script import Script

__all__ = ["Direction", "RevisionSQL", "Statement", "render"]

Direction = Literal["upgrade", "downgrade"]


@dataclass(frozen=True)
class Statement:
    """SQL a revision writes and the line of its file that wrote it (``None``: the
    environment's own, such as a ``SET lock_timeout`` that ``env.py`` runs first)."""

    sql: str
    line: int | None


@dataclass
class RevisionSQL:
    """What one revision runs in one direction; ``error`` when it cannot render offline."""

    script: Script
    direction: Direction
    statements: list[Statement] = field(default_factory=list)
    in_transaction: bool = True
    error: str | None = None


class _Recorder(io.StringIO):
    """An output buffer noting, for each write, which revision file (and line) is writing."""

    def __init__(self, paths: Sequence[str]) -> None:
        super().__init__()
        self.paths = {os.path.realpath(p) for p in paths}
        self.records: list[tuple[str, str | None, int | None]] = []  # (sql, path, line)
        self._seen: dict[str, str | None] = {}

    def _revision_file(self, filename: str) -> str | None:
        if filename not in self._seen:
            real = os.path.realpath(filename)
            self._seen[filename] = real if real in self.paths else None
        return self._seen[filename]

    def write(self, text: str) -> int:
        frame = inspect.currentframe()
        path: str | None = None
        line: int | None = None
        while frame is not None:
            path = self._revision_file(frame.f_code.co_filename)
            if path is not None:
                line = frame.f_lineno
                break
            frame = frame.f_back
        del frame
        if text.strip():
            self.records.append((text.strip(), path, line))
        return len(text)


@contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """``env.py`` configures logging from the ini and logs every step: keep that out of the
    linter's output and leave the caller's logging as it was."""
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {
        name: (lg.disabled, lg.level, lg.handlers[:])
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    captured = io.StringIO()
    try:
        with redirect_stdout(captured), redirect_stderr(captured):
            yield captured
    finally:
        root.handlers[:], root.level = saved_root
        for name, (disabled, level, handlers) in saved.items():
            lg = logging.getLogger(name)
            lg.disabled, lg.level, lg.handlers[:] = disabled, level, handlers


def _downs(script: Script) -> tuple[str, ...]:
    given = script.down_revision
    return (given,) if isinstance(given, str) else tuple(given or ())


def _run(
    config: Config, scripts: Sequence[Script], direction: Direction, lower: str | None, upper: str
) -> tuple[_Recorder, str | None]:
    recorder = _Recorder([str(s.path) for s in scripts])
    saved = config.output_buffer, config.attributes.get("configure_logger")
    config.output_buffer = recorder
    config.attributes["configure_logger"] = False  # honoured by sa-patterns' env.py
    error = None
    with _quiet():
        try:
            if direction == "upgrade":
                command.upgrade(config, f"{lower}:{upper}" if lower else upper, sql=True)
            else:
                command.downgrade(config, f"{upper}:{lower or 'base'}", sql=True)
        except Exception as exc:  # user code in env.py or a revision: report it, lint the rest
            error = f"{type(exc).__name__}: {exc}"
        finally:
            config.output_buffer = saved[0]
            if saved[1] is None:
                config.attributes.pop("configure_logger", None)
            else:
                config.attributes["configure_logger"] = saved[1]
    return recorder, error


def _split(recorder: _Recorder, scripts: Sequence[Script], direction: Direction) -> list[RevisionSQL]:
    in_transaction = any(sql.upper() == "BEGIN;" for sql, path, _ in recorder.records if path is None)
    prelude: list[Statement] = []
    by_path: dict[str, list[Statement]] = {}
    for sql, path, line in recorder.records:
        if path is not None:
            by_path.setdefault(path, []).append(Statement(sql, line))
        elif not by_path and sql.upper().startswith("SET"):
            prelude.append(Statement(sql, None))  # env.py's session settings hold for all
    return [
        RevisionSQL(
            s,
            direction,
            [*prelude, *by_path.get(os.path.realpath(str(s.path)), [])],
            in_transaction,
        )
        for s in scripts
    ]


def render(
    config: Config, scripts: Sequence[Script], direction: Direction, lower: str | None, upper: str
) -> list[RevisionSQL]:
    """``scripts`` (the revisions after ``lower`` up to ``upper``, ``lower`` None for base) in
    ``direction``: one offline run for them all; if that fails, one run per revision, so a
    revision that cannot render offline (``op.get_bind()`` queries) does not hide the others."""
    recorder, error = _run(config, scripts, direction, lower, upper)
    if error is None:
        return _split(recorder, scripts, direction)
    rendered = []
    for script in scripts:
        downs = _downs(script)  # a merge: its first parent; only its own SQL is kept
        recorder, error = _run(config, [script], direction, downs[0] if downs else None, script.revision)
        (one,) = _split(recorder, [script], direction)
        one.error = error
        rendered.append(one)
    return rendered
