"""The pages' generated parts equal their sources (tools/docs_sync.py): inline example code equals
its file under docs/examples, and every quoted bench figure equals the last recorded run, so
neither can drift; and bench/results.json holds the same run as bench/RESULTS.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench.harness import Row
from tests.docs.test_examples import DOCS, _load

sync: Any = _load(DOCS.parent / "tools" / "docs_sync.py")
PAGES = sync.pages()


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_inline_examples_equal_their_files(page: Path) -> None:
    text = page.read_text()
    assert sync.with_examples(text) == text, (
        f"docs/{page.name}: an inline example differs from its file; run `{sync.COMMAND}`"
    )


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_bench_figures_equal_the_recorded_run(page: Path) -> None:
    text = page.read_text()
    results = json.loads(sync.RESULTS.read_text())
    assert sync.with_figures(text, results) == text, (
        f"docs/{page.name}: a bench figure differs from bench/results.json; run `{sync.COMMAND}`"
    )


def test_results_json_is_the_run_in_results_md() -> None:
    markdown = (sync.RESULTS.parent / "RESULTS.md").read_text()
    for name, section in json.loads(sync.RESULTS.read_text()).items():
        body = re.search(f"<!-- bench:{name} -->(.*?)<!-- /bench:{name} -->", markdown, re.S)
        assert body is not None, f"section {name} of results.json is not in RESULTS.md"
        for table in section["tables"]:
            for row in table["rows"]:
                line = "| " + " | ".join(Row(**row).cells()) + " |"
                assert line in body[1], f"{name}: RESULTS.md lacks {line} (results.json has it)"


RESULTS = {"s": {"tables": [
    {"title": "append, 1 event per transaction (500 transactions)", "rows": [
        {"case": "plain INSERT", "median": 0.5, "low": 0.4, "high": 0.6, "ratio": 1.0, "unit": "s"},
        {"case": "EventStore.append", "median": 0.25, "low": 0.2, "high": 0.3, "ratio": 0.5, "unit": "s"},
    ]},
    {"title": "append, 100 events per transaction", "rows": [
        {"case": "EventStore.append", "median": 0.75, "low": 0.7, "high": 0.8, "ratio": 1.5, "unit": "s"},
    ]},
]}}


def test_a_figure_is_found_by_slug_prefixes_and_refreshed() -> None:
    page = "at <!-- bench: s/append-1/eventstore -->9.99×<!-- /bench -->, " \
           "<!-- bench: s/append-100/eventstore:median -->1 ms<!-- /bench -->"
    assert sync.with_figures(page, RESULTS) == (
        "at <!-- bench: s/append-1/eventstore -->0.50×<!-- /bench -->, "
        "<!-- bench: s/append-100/eventstore:median -->750.0 ms<!-- /bench -->"
    )


@pytest.mark.parametrize("key", ["s/append/eventstore-append", "s/append-1/postgres", "t/append-1/plain"])
def test_an_ambiguous_or_unknown_figure_key_is_an_error(key: str) -> None:
    with pytest.raises(KeyError):
        sync.figure(RESULTS, key)


def test_a_figure_opening_a_line_is_refused() -> None:
    with pytest.raises(ValueError, match="starts a line"):
        sync.with_figures("text\n  <!-- bench: s/append-1/eventstore -->0.50×<!-- /bench -->", RESULTS)


def test_a_snippets_include_becomes_an_inline_example() -> None:
    page = 'Usage:\n\n```python\n--8<-- "docs/examples/seeding.py"\n```\n\nMore.\n'
    code = (DOCS / "examples" / "seeding.py").read_text().rstrip()
    assert sync.with_examples(page) == (
        f"Usage:\n\n<!-- example: docs/examples/seeding.py -->\n```python\n{code}\n```\n"
        "<!-- /example -->\n\nMore.\n"
    )
