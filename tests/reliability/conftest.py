"""Reliability suite: PgBouncer in transaction pooling mode in front of the test server.

PgBouncer (Debian package ``pgbouncer``; ``.ci/run`` installs it when missing) is started on a
free local port, as an unprivileged account when we are root (it refuses root), with a server
pool smaller than the number of concurrent clients, and stopped afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, Engine, create_engine, text
from sqlalchemy.pool import NullPool

from sa_patterns.errors import ConfigurationError


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.reliability)


#: A LOGIN NOSUPERUSER NOBYPASSRLS role (cluster-wide, created idempotently, never dropped
#: while other workers may use it): row-level security only binds such a role.
APP_ROLE = "sap_reliability_app"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str:
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if found is None:
        raise ConfigurationError("pgbouncer is not installed: apt-get install pgbouncer (.ci/run does).")
    return found


@pytest.fixture(scope="session")
def pgbouncer_url(pg_url: URL) -> Iterator[URL]:
    """A URL to ``pg_url``'s database through PgBouncer (transaction pooling, 2 server conns)."""
    workdir = Path(tempfile.mkdtemp(prefix="sap-bouncer-"))
    port = _free_port()
    host = pg_url.query.get("host") or pg_url.host or "127.0.0.1"
    if isinstance(host, tuple):
        host = host[0]
    upstream_port = pg_url.query.get("port") or pg_url.port or 5432
    user = pg_url.username or "postgres"
    # trust auth still needs every user listed: the superuser and the app role of the suite
    (workdir / "users.txt").write_text(f'"{user}" ""\n"{APP_ROLE}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{pg_url.database} = host={host} port={upstream_port} dbname={pg_url.database}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmin_pool_size = 0\nreserve_pool_size = 0\n"
        "max_client_conn = 300\nserver_reset_query =\nignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {workdir / 'pgbouncer.log'}\npidfile = {workdir / 'pgbouncer.pid'}\n"
    )
    kwargs: dict[str, object] = {}
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        account = pwd.getpwnam("postgres") if _has_user("postgres") else pwd.getpwnam("nobody")
        for path in [workdir, *workdir.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
        kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    proc = subprocess.Popen([_binary(), str(workdir / "pgbouncer.ini")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    url = URL.create("postgresql+psycopg", username=user, host="127.0.0.1", port=port, database=pg_url.database)
    deadline = time.monotonic() + 15
    while True:
        try:
            probe = create_engine(url, poolclass=NullPool, connect_args={"prepare_threshold": None})
            with probe.connect() as conn:
                conn.execute(text("SELECT 1"))
            probe.dispose()
            break
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "pgbouncer.log").read_text() if (workdir / "pgbouncer.log").exists() else ""
                proc.kill()
                raise ConfigurationError(f"pgbouncer did not start:\n{log[-2000:]}") from None
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def bouncer_engine(pgbouncer_url: URL, db_schema: str) -> Iterator[Engine]:
    """An engine through PgBouncer; psycopg must not use server-side prepared statements
    (PgBouncer < 1.21 in transaction mode cannot route them), and session state such as a
    search_path cannot be set at connect time, so tests qualify names with ``db_schema``."""
    eng = create_engine(
        pgbouncer_url, pool_size=20, max_overflow=0, connect_args={"prepare_threshold": None}
    )
    yield eng
    eng.dispose()
