"""docs/tutorial.md, run as a newcomer runs it, so the page cannot rot.

The page marks every fenced block: ``<!-- tutorial-file: PATH -->`` (written whole to PATH,
relative to the shell's current folder at that point), ``<!-- tutorial-run -->`` (bash, must exit
0; ``tutorial-run: fails`` must exit non-zero) and ``<!-- tutorial-output -->`` (what the run
before it prints: each line must appear, in order, in its stdout+stderr; ``...`` stands for
anything, a whole line or part of one). Blocks run in order, each in a fresh ``bash`` that starts
in the folder and with the environment the previous block left.

Two blocks are substituted, and only those:

- ``tutorial-run: install`` (a virtualenv and a wheel of sa_patterns, which is not on PyPI) is
  replaced by importing what it installs from the interpreter running this test, whose
  ``bin`` folder comes first on ``PATH`` (``sa-patterns``, ``alembic``, ``pytest``, ``python``).
- ``tutorial-run: settings`` (the role names, the URLs and ``createdb``) keeps its variables but
  points them at this run: a scratch database on the test server instead of ``createdb notes``,
  and role names unique to the run (roles are cluster-wide, and other runs share the server).
  The page's role names in expected outputs are read as these. The database and the roles are
  dropped at the end, with everything the roles own.

The tutorial's own ``pytest`` run gets the server's superuser URL, as the page says, and makes
and drops its own database and roles.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL, make_url

from sa_patterns.database import Server, scratch_database
from sa_patterns.roles import RoleNames
from sa_patterns.testing.logins import drop_roles

PAGE = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
BLOCK = re.compile(
    r"<!-- tutorial-(?P<kind>file|run|output)(?:: (?P<arg>[^ ]+))? -->\n"
    r"(?P<fence>`{3,})(?P<lang>[a-z]*)\n(?P<body>.*?)\n(?P=fence)\n",
    re.S,
)
RUN_ARGS = {None, "install", "settings", "fails"}
ROLE_VARS = {"owner": "SA_PATTERNS_OWNER_ROLE", "app": "SA_PATTERNS_APP_ROLE", "admin": "SA_PATTERNS_ADMIN_ROLE"}
PASSWORD_VARS = {"SA_PATTERNS_OWNER_PASSWORD", "SA_PATTERNS_APP_PASSWORD"}
URL_VARS = {"SUPERUSER_URL", "OWNER_URL", "APP_URL"}
# what the install block installs, as modules the test's interpreter must import instead
INSTALLED = {"sa_patterns": "sa_patterns", "[fastapi]": "fastapi", "httpx": "httpx",
             "pytest": "pytest", "pytest-asyncio": "pytest_asyncio"}


@dataclass(frozen=True)
class Step:
    """One marked block: its kind (file, run, output), the marker's argument, the fence's
    language and the text inside."""

    kind: str
    arg: str | None
    lang: str
    body: str


def steps(text: str) -> list[Step]:
    """The page's marked blocks, in order; every fenced block of the page must be one."""
    found = [Step(m["kind"], m["arg"], m["lang"], m["body"]) for m in BLOCK.finditer(text)]
    fences = len(re.findall(r"^`{3,}", text, re.M))
    assert fences == 2 * len(found), "docs/tutorial.md: a fenced block without a tutorial marker"
    return found


def test_every_block_of_the_page_is_a_step_of_the_path() -> None:
    """Files, commands and outputs are well formed, so the run below covers the whole page."""
    page = steps(PAGE.read_text())
    kinds = [s.kind for s in page]
    assert kinds.count("run") >= 8 and kinds.count("file") >= 5
    previous = None
    for step in page:
        if step.kind == "run":
            assert step.lang == "bash" and step.arg in RUN_ARGS, step
        if step.kind == "file":
            assert step.arg and not step.arg.startswith("/") and ".." not in step.arg, step
        if step.kind == "output":
            assert previous is not None and previous.kind == "run", "an output follows its command"
        previous = step
    written = [s.arg for s in page if s.kind == "file"]
    assert len(written) == len(set(written)), "each file is shown once, whole"
    assert [s.arg for s in page if s.arg in ("install", "settings")] == ["install", "settings"]


def assert_shows(expected: str, output: str) -> None:
    """Each line of ``expected`` is found in ``output``, in order; ``...`` matches anything."""
    lines = output.splitlines()
    at = 0
    for want in expected.splitlines():
        want = want.strip()
        if want in ("", "..."):
            continue
        parts = want.split("...")
        while at < len(lines) and not _has_in_order(lines[at], parts):
            at += 1
        assert at < len(lines), f"the page shows {want!r}, the command printed:\n{output}"
        at += 1


def _has_in_order(line: str, parts: list[str]) -> bool:
    position = 0
    for part in parts:
        found = line.find(part, position)
        if found < 0:
            return False
        position = found + len(part)
    return True


class Shell:
    """A newcomer's terminal: each block in a new bash, in the folder and with the environment
    the previous block left (``cd`` and ``export`` carry over, as they would)."""

    def __init__(self, home: Path, state: Path) -> None:
        self.cwd = home
        self.state = state
        bin_dir = str(Path(sys.executable).parent)
        drop = {"DATABASE_URL", "FORCE_COLOR", "PY_COLORS"}
        self.env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PYTEST_")}
        # the tutorial's commands are the installed package's (the install block's substitute);
        # rich tables at the width of a plain 80-column terminal, as the page shows them
        self.env |= {"PATH": bin_dir + os.pathsep + self.env.get("PATH", ""), "COLUMNS": "80",
                     "PYTHONUNBUFFERED": "1"}

    def run(self, script: str, *, fails: bool = False) -> str:
        env_file, cwd_file = self.state / "env", self.state / "cwd"
        keep = "" if fails else f"\nenv -0 > {shlex.quote(str(env_file))}\npwd > {shlex.quote(str(cwd_file))}"
        done = subprocess.run(
            ["bash", "-c", f"set -eo pipefail\n{script}{keep}"],
            cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=300, check=False,
        )
        if fails:
            assert done.returncode != 0, f"expected to fail:\n{script}\n{done.stdout}"
            return done.stdout
        assert done.returncode == 0, f"exit {done.returncode}:\n{script}\n{done.stdout}"
        self.env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        self.cwd = Path(cwd_file.read_text().strip())
        return done.stdout


def settings(body: str, database: URL, server: URL, roles: RoleNames) -> tuple[str, dict[str, str]]:
    """The settings block with its variables pointed at this run, and the page's role names →
    this run's."""
    page: dict[str, str] = {}
    others = []
    for line in body.splitlines():
        if line.startswith("export "):
            page |= dict(pair.split("=", 1) for pair in shlex.split(line[len("export "):]))
        else:
            others.append(line)
    assert [line.split()[0] for line in others] == ["createdb"], "the page creates its database"
    assert set(page) == set(ROLE_VARS.values()) | PASSWORD_VARS | URL_VARS, sorted(page)
    renamed = {page[var]: getattr(roles, part) for part, var in ROLE_VARS.items()}
    ours = {var: getattr(roles, part) for part, var in ROLE_VARS.items()}
    for var in URL_VARS:
        url = make_url(page[var])
        # the page's URLs log in as its roles (or the superuser) with its passwords
        assert url.username in renamed or var == "SUPERUSER_URL", (var, url.username)
        login = renamed.get(url.username or "")
        # the query too: the embedded server is reached by its socket directory (?host=...)
        url = url.set(host=database.host, port=database.port, database=database.database,
                      username=login or server.username, query=database.query,
                      password=url.password if login else server.password)
        ours[var] = url.render_as_string(hide_password=False)
    ours |= {var: page[var] for var in PASSWORD_VARS}
    script = "\n".join(f"export {var}={shlex.quote(value)}" for var, value in sorted(ours.items()))
    return script, renamed


def test_the_tutorial_runs_as_written(pg_server: Server, tmp_path: Path) -> None:
    """From ``mkdir notes-app`` to a green doctor, every command exits as the page says and
    prints what the page shows."""
    page = steps(PAGE.read_text())
    home, state = tmp_path / "home", tmp_path / "state"
    home.mkdir()
    state.mkdir()
    shell = Shell(home, state)
    token = secrets.token_hex(4)
    roles = RoleNames(owner=f"tut_{token}_owner", app=f"tut_{token}_app", admin=f"tut_{token}_admin")
    renamed: dict[str, str] = {}
    output = ""
    try:
        with scratch_database(pg_server.url, prefix="sap_tutorial") as database:
            for step in page:
                if step.kind == "file":
                    assert step.arg is not None
                    target = shell.cwd / step.arg
                    assert target.parent.is_dir(), f"{step.arg}: the page made no folder for it"
                    target.write_text(step.body + "\n")
                elif step.kind == "output":
                    expected = step.body
                    for theirs, mine in renamed.items():  # the page's role names are this run's
                        expected = expected.replace(theirs, mine)
                    assert_shows(expected, output)
                elif step.arg == "install":
                    assert all(name in step.body for name in INSTALLED), step.body
                    output = shell.run(f"python -c 'import {', '.join(INSTALLED.values())}'")
                elif step.arg == "settings":
                    script, renamed = settings(step.body, database, pg_server.url, roles)
                    output = shell.run(script)
                else:
                    output = shell.run(step.body, fails=step.arg == "fails")
    finally:
        # the database went with everything in it the roles own or were granted; then the roles
        drop_roles(pg_server.url, roles)
