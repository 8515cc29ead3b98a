"""Every runnable example of the docs runs against PostgreSQL, each on its own fresh database,
and every example is shown by some page (no orphan, no page pointing at a missing file); the
pages' copies are kept equal to these files by tests/docs/test_sync.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from sa_patterns.database import Server, scratch_database

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.py"))


def _load(path: Path) -> object:
    spec = importlib.util.spec_from_file_location(f"docs_example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # registered like an import, so SQLAlchemy can resolve string annotations of its models
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path: Path, pg_server: Server) -> None:
    module = _load(path)
    with scratch_database(pg_server.url, prefix=f"sap_doc_{path.stem}") as url:
        module.main(url)  # type: ignore[attr-defined]


def test_every_example_is_on_a_page_and_every_shown_example_exists() -> None:
    sync = _load(DOCS.parent / "tools" / "docs_sync.py")
    referenced = set()
    for page in DOCS.glob("*.md"):
        for match in sync.EXAMPLE.finditer(page.read_text()):  # type: ignore[attr-defined]
            target = DOCS.parent / match["path"]
            assert target.is_file(), f"{page.name} shows missing {match['path']}"
            referenced.add(target.resolve())
    orphans = [p.name for p in EXAMPLES if p.resolve() not in referenced]
    assert not orphans, f"examples no page shows: {orphans}"
