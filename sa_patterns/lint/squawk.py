"""The squawk binary (``pip install squawk-cli``): run over SQL files, read its JSON report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError

__all__ = ["SquawkFinding", "run_squawk", "squawk_binary"]

_INSTALL = "install it with: pip install 'sa_patterns[lint]' (the squawk-cli package)"


@dataclass(frozen=True)
class SquawkFinding:
    file: str
    line: int  # 0-based, as squawk's JSON reporter gives it
    rule: str
    message: str
    help: str


def squawk_binary() -> str:
    """The squawk installed beside this Python (a venv's bin/ need not be on PATH), else PATH's."""
    here = Path(sys.executable).parent / ("squawk.exe" if sys.platform == "win32" else "squawk")
    found = str(here) if here.is_file() else shutil.which("squawk")
    if not found:
        raise ConfigurationError(f"squawk is not installed; {_INSTALL}.")
    return found


def run_squawk(
    files: Sequence[Path], *, pg_version: str | None, exclude: Sequence[str] = ()
) -> list[SquawkFinding]:
    """Squawk's findings on ``files`` (each holds its own BEGIN/COMMIT, as Alembic runs it)."""
    if not files:
        return []
    args = [squawk_binary(), "--reporter", "json", "--no-error-on-unmatched-pattern"]
    if pg_version:
        args.append(f"--pg-version={pg_version}")
    if exclude:
        args.append(f"--exclude={','.join(exclude)}")
    done = subprocess.run([*args, *map(str, files)], capture_output=True, text=True, check=False)
    try:
        report = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, list):
        said = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigurationError(
            f"squawk failed (exit {done.returncode}): {said[0] if said else 'no output'}"
        )
    return [
        SquawkFinding(
            str(item["file"]), int(item["line"]), str(item["rule_name"]),
            str(item.get("message") or ""), str(item.get("help") or ""),
        )
        for item in report
    ]
