"""The ``sa-patterns`` command as a user runs it: its version, and failures told in one or two
lines (what, and what to do) with the traceback behind ``--debug``."""

from __future__ import annotations

import subprocess
import sys

import sa_patterns


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sa_patterns.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.splitlines() == [f"sa-patterns {sa_patterns.__version__}"]
    assert done.stderr == ""
