"""Lint a migration directory: render each revision offline, let squawk read the SQL, add the
toolkit's own rules and the live table sizes, and say for each finding which ``op`` line it
comes from, the lock it takes, the online alternative and whether it is blocking."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL

from ..errors import ConfigurationError
from .render import Direction, RevisionSQL, render
from .rules import created_table, lock_timeout_change, rule, statement_table, toolkit_rules
from .sizes import TableSize, server_version, table_sizes
from .squawk import run_squawk

__all__ = ["DEFAULT_PG_VERSION", "SMALL_TABLE_ROWS", "Finding", "lint_migrations", "load_config"]

Severity = Literal["blocking", "advice"]
SMALL_TABLE_ROWS = 10_000
DEFAULT_PG_VERSION = "14"  # the toolkit's oldest supported server


@dataclass(frozen=True)
class Finding:
    """One problem in one revision: where (``path``:``line``, the ``op`` call), what (``rule``,
    from squawk or sa_patterns), on which table, the lock, the online alternative, and whether
    it is ``blocking`` (``why`` says what decided the severity)."""

    path: str
    line: int | None
    revision: str
    direction: Direction
    rule: str
    source: str
    severity: Severity
    table: str | None
    lock: str
    alternative: str
    message: str
    why: str
    sql: str
    op: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Chunk:
    """A revision's SQL as one file for squawk."""

    rendered: RevisionSQL
    file: Path
    lines: list[int]  # the statement (index into rendered.statements) on each line; -1: ours


def load_config(ini: str | os.PathLike[str] | Config) -> Config:
    if isinstance(ini, Config):
        return ini
    path = Path(ini)
    if not path.is_file():
        raise ConfigurationError(f"no Alembic configuration at {path}: pass the alembic.ini to lint.")
    return Config(str(path))


def _selection(script_dir: ScriptDirectory, revisions: str | None) -> tuple[list[Script], str | None, str]:
    """The scripts of ``A:B`` (after A, up to B), ``:B``, ``A:`` or ``REV`` (that one), oldest first."""
    spec = revisions or ":"
    if spec.endswith(".py"):
        spec = _revision_in(script_dir, spec)
    if ":" in spec:
        lower, _, upper = spec.partition(":")
        lower_rev = None if lower in ("", "base") else lower
        upper_rev = upper or "heads"
    else:
        try:
            one = script_dir.get_revision(spec)
        except CommandError:
            one = None
        if one is None:
            raise ConfigurationError(f"no revision {spec!r} in {script_dir.dir}.")
        downs = one.down_revision
        lower_rev = downs if isinstance(downs, str) else (downs[0] if downs else None)
        upper_rev = one.revision
    try:
        scripts = list(script_dir.iterate_revisions(upper_rev, lower_rev or "base"))
    except CommandError as exc:
        raise ConfigurationError(f"cannot select revisions {spec!r}: {exc}") from None
    if ":" not in spec:
        scripts = [s for s in scripts if s.revision == upper_rev]
    return list(reversed(scripts)), lower_rev, upper_rev


def _revision_in(script_dir: ScriptDirectory, path: str) -> str:
    wanted = os.path.realpath(path)
    for script in script_dir.walk_revisions():
        if os.path.realpath(str(script.path)) == wanted:
            return script.revision
    raise ConfigurationError(f"{path} is not a revision of {script_dir.dir}.")


def _chunk(rendered: RevisionSQL, folder: Path, index: int) -> _Chunk:
    """BEGIN/COMMIT around the revision when Alembic runs it in a transaction, so squawk sees
    an autocommit_block()'s COMMIT ... BEGIN as the transactions they are."""
    text: list[str] = []
    lines: list[int] = []

    def add(sql: str, index: int) -> None:
        for part in f"{sql}\n".splitlines():
            text.append(part)
            lines.append(index)

    if rendered.in_transaction:
        add("BEGIN;", -1)
    for index, statement in enumerate(rendered.statements):
        add(statement.sql, index)
    if rendered.in_transaction:
        add("COMMIT;", -1)
    file = folder / f"{index:04d}_{rendered.script.revision}_{rendered.direction}.sql"
    file.write_text("\n".join(text) + "\n")
    return _Chunk(rendered, file, lines)


def _op_source(path: str, line: int | None) -> str | None:
    if line is None:
        return None
    try:
        return Path(path).read_text().splitlines()[line - 1].strip()
    except (OSError, IndexError):
        return None


@dataclass
class _Raw:
    chunk: _Chunk
    statement: int  # index into rendered.statements (-1: the revision as a whole)
    rule: str
    message: str


def _statement_at(chunk: _Chunk, line: int) -> int:
    """The statement on ``line`` (0-based, as squawk reports it) of the chunk's file."""
    return chunk.lines[line] if 0 <= line < len(chunk.lines) else -1


def lint_migrations(
    config: str | os.PathLike[str] | Config = "alembic.ini",
    *,
    revisions: str | None = None,
    url: str | URL | None = None,
    downgrade: bool = False,
    pg_version: str | None = None,
    exclude: Sequence[str] = (),
    small_table_rows: int = SMALL_TABLE_ROWS,
) -> list[Finding]:
    """Findings for the revisions of ``config`` (an alembic.ini or a ``Config``).

    ``revisions``: ``A:B`` (after A up to B), ``A:``, ``:B`` or one revision; all by default.
    ``url``: a database whose table sizes decide severity (a scan on an empty or small table is
    advice) and whose version squawk assumes; without it every scan is blocking.
    ``downgrade``: lint the downgrades too. ``exclude``: rule names to leave out.
    """
    cfg = load_config(config)
    if not (cfg.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")):
        cfg.set_main_option("sqlalchemy.url", "postgresql://")  # a dialect to render; no connection
    script_dir = ScriptDirectory.from_config(cfg)
    scripts, lower, upper = _selection(script_dir, revisions)
    if not scripts:
        return []
    directions: list[Direction] = ["upgrade", "downgrade"] if downgrade else ["upgrade"]
    rendered = [r for d in directions for r in render(cfg, scripts, d, lower, upper)]
    version = pg_version or (server_version(url) if url else DEFAULT_PG_VERSION)
    skip = set(exclude)
    raws: list[_Raw] = []
    with tempfile.TemporaryDirectory(prefix="sa_patterns_lint_") as tmp:
        chunks = [_chunk(r, Path(tmp), i) for i, r in enumerate(rendered)]
        by_file = {str(c.file): c for c in chunks}
        by_name = {c.file.name: c for c in chunks}
        for found in run_squawk([c.file for c in chunks], pg_version=version, exclude=sorted(skip)):
            chunk = by_file.get(found.file) or by_name.get(Path(found.file).name)
            if chunk is not None:
                raws.append(_Raw(chunk, _statement_at(chunk, found.line), found.rule,
                                 " ".join(p for p in (found.message, found.help) if p)))
    for chunk in chunks:
        if chunk.rendered.error:
            raws.append(_Raw(chunk, -1, "not-linted", chunk.rendered.error))
        for index, statement in enumerate(chunk.rendered.statements):
            for name in toolkit_rules(statement.sql):
                raws.append(_Raw(chunk, index, name, ""))
    raws = [r for r in raws if r.rule not in skip]
    sizes: dict[str, TableSize] = {}
    owners: dict[str, str] = {}
    if url:
        tables: set[str] = set()
        indexes: set[str] = set()
        for raw in raws:
            if raw.statement >= 0:
                table, dropped = statement_table(raw.chunk.rendered.statements[raw.statement].sql)
                tables.update([table] if table else [])
                indexes.update([dropped] if dropped else [])
        sizes, owners = table_sizes(url, tables, indexes)
    lock_timeout = "require-lock-timeout" in skip
    findings = [_finding(r, sizes, owners, small_table_rows, bool(url), lock_timeout) for r in raws]
    order = {s.revision: i for i, s in enumerate(scripts)}
    findings.sort(key=lambda f: (f.direction != "upgrade", order.get(f.revision, 0), f.line or 0, f.rule))
    return _unique(findings)


def _unique(findings: list[Finding]) -> list[Finding]:
    seen, kept = set(), []
    for f in findings:
        key = (f.path, f.line, f.direction, f.rule, f.sql)
        if key not in seen:
            seen.add(key)
            kept.append(f)
    return kept


def _context(chunk: _Chunk, index: int) -> tuple[set[str], bool]:
    """Tables created before statement ``index`` of the revision, and whether a lock_timeout
    is in force there."""
    created: set[str] = set()
    timeout, local_timeout = False, False
    for statement in chunk.rendered.statements[:index]:
        table = created_table(statement.sql)
        if table:
            created.add(_key(table))
        change = lock_timeout_change(statement.sql)
        if change is not None:
            is_set, local = change
            if local:
                local_timeout = is_set
            else:
                timeout = is_set
        if statement.sql.strip().upper() in ("COMMIT;", "ROLLBACK;"):
            local_timeout = False
    return created, timeout or local_timeout


def _key(name: str) -> str:
    """A table name as PostgreSQL folds it, without its schema (for "created here")."""
    last = name.split(".")[-1].strip()
    return last[1:-1].replace('""', '"') if last.startswith('"') else last.lower()


def _finding(
    raw: _Raw, sizes: dict[str, TableSize], owners: dict[str, str], small: int,
    measured: bool, timeout_excluded: bool,
) -> Finding:
    rendered = raw.chunk.rendered
    path = str(rendered.script.path)
    described = rule(raw.rule)
    statement = rendered.statements[raw.statement] if raw.statement >= 0 else None
    sql = statement.sql if statement else ""
    table, index = statement_table(sql) if statement else (None, None)
    if table is None and index is not None:
        table = owners.get(index)
    severity: Severity = "blocking"
    why = ""
    created, timeout = _context(raw.chunk, raw.statement) if statement else (set(), False)
    size = sizes.get(table) if table else None
    kind = described.kind
    if raw.rule == "not-linted":
        severity, why = "advice", raw.message.splitlines()[0] if raw.message else ""
    elif kind == "advice":
        severity = "advice"
    elif table and _key(table) in created:
        severity, why = "advice", "the table is created in this revision"
    elif kind == "queue" and described.source == "sa_patterns" and timeout:
        severity, why = "advice", "brief, under lock_timeout"
    elif kind == "queue" and described.source == "sa_patterns" and timeout_excluded:
        severity, why = "advice", "brief; require-lock-timeout is excluded"
    elif kind in ("scan", "fails", "queue") and size is not None and not size.exists:
        severity, why = "advice", "the table is not in the database yet"
    elif kind == "scan" and size is not None and size.rows is not None and size.rows <= small:
        severity, why = "advice", f"{_size(size)}: brief"
    elif kind == "fails" and size is not None and size.rows == 0 and size.heap_bytes == 0:
        severity, why = "advice", "the table is empty"
    elif size is not None:
        why = _size(size) if size.rows is not None else f"{_size(size)}, never analyzed: size unknown"
    elif kind in ("scan", "fails") and not measured:
        why = "table size unknown: pass --url"
    message = raw.message or described.lock
    return Finding(
        path=path,
        line=statement.line if statement else None,
        revision=rendered.script.revision,
        direction=rendered.direction,
        rule=raw.rule,
        source=described.source,
        severity=severity,
        table=table,
        lock=described.lock,
        alternative=described.alternative,
        message=message,
        why=why,
        sql=" ".join(sql.split())[:200],
        op=_op_source(path, statement.line if statement else None),
    )


def _size(size: TableSize) -> str:
    rows = "?" if size.rows is None else f"{size.rows:,} rows"
    megabytes = size.bytes / 1024 / 1024
    return f"{rows}, {megabytes:.1f} MB" if megabytes >= 0.1 else f"{rows}, {size.bytes // 1024} kB"
