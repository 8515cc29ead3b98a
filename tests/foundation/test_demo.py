"""``sa-patterns demo`` as a newcomer runs it, in an 80-column terminal: it passes, its migration
preview wraps long lines instead of cropping them, and Alembic's own messages stay out of the
checks."""

from __future__ import annotations

import os
import subprocess
import sys

from sa_patterns.database import Server


def test_demo_output_reads_right_at_80_columns(pg_server: Server) -> None:
    env = {**os.environ, "DATABASE_URL": pg_server.url.render_as_string(hide_password=False), "COLUMNS": "80"}
    done = subprocess.run(
        [sys.executable, "-m", "sa_patterns.cli", "demo"], capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("demo passed: ")
    assert max(len(line) for line in lines) <= 80
    # Alembic's "Generating … done" / "No new upgrade operations detected." are not the demo's
    assert not [line for line in lines if line.startswith(("Generating", "No new upgrade", "INFO"))]
    start = next(i for i, line in enumerate(lines) if line.startswith("def upgrade() -> None:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("  … ") and "more lines in" in line)
    preview = "".join(lines[start:end])  # wrapped lines joined back: every statement shown whole
    assert "pg_trgm" in preview
    assert preview.count("(") - preview.count(")") in range(0, 3), "a statement cut mid-way"
    generated = next(i for i, line in enumerate(lines) if line.startswith("  generated "))
    summary = " ".join(lines[generated + 1 : start])
    assert "create_table ×" in summary and "Trigger ×" in summary
