"""Findings as text: a blocking one with its op, SQL, lock and alternative; advice on one line."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .linter import Finding

__all__ = ["format_findings", "summary"]


def _where(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path


def format_findings(findings: Sequence[Finding]) -> list[str]:
    """Human-readable lines: a blocking finding with its op, lock and alternative; advice on
    one line each."""
    lines: list[str] = []
    for f in findings:
        where = f"{_where(f.path)}:{f.line}" if f.line else _where(f.path)
        on = f" on {f.table}" if f.table else ""
        why = f" ({f.why})" if f.why else ""
        down = " [downgrade]" if f.direction == "downgrade" else ""
        if f.severity == "blocking":
            lines.append(f"{where}: BLOCKING {f.rule}{on}{why}{down}")
            if f.op:
                lines.append(f"    op: {f.op}")
            lines.append(f"    sql: {f.sql[:120]}" if f.sql else f"    {f.message}")
            lines.append(f"    lock: {f.lock}")
            lines.append(f"    instead: {f.alternative}")
        else:
            lines.append(f"{where}: advice {f.rule}{on}{why}{down}")
    return lines




def summary(findings: Sequence[Finding]) -> str:
    blocking = sum(f.severity == "blocking" for f in findings)
    revisions = len({f.revision for f in findings})
    where = f" in {revisions} revision(s)" if findings else ""
    return f"{blocking} blocking, {len(findings) - blocking} advice{where}"
