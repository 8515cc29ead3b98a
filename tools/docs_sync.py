"""``python tools/docs_sync.py [--check]``: rewrite the generated parts of docs/*.md in place.

Pages carry their example code inline, so they read right on GitHub too, and the files under
docs/examples stay what the test suite runs: ``<!-- example: docs/examples/x.py -->``, a fenced
copy of the file, ``<!-- /example -->``; a pymdownx.snippets include of an example (no longer
rendered) is turned into that form. Performance figures are quoted from the last bench run
(``bench/results.json``, written by ``python -m bench`` with RESULTS.md), never typed:
``<!-- bench: SECTION/TABLE/CASE -->1.87×<!-- /bench -->``. TABLE and CASE are the slugs of a
table title and of a case name (lower case, "-" between words), or a prefix of one that ends
where a word does; ``:median`` after CASE quotes the median instead of the ratio. tests/docs
fails when a page differs from what this script writes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.harness import Row  # noqa: E402  (figures formatted as RESULTS.md shows them)

RESULTS = ROOT / "bench" / "results.json"
COMMAND = "python tools/docs_sync.py"
EXAMPLE = re.compile(r"(?P<open><!-- example: (?P<path>\S+) -->\n).*?(?P<close><!-- /example -->)", re.S)
SNIPPET = re.compile(r'^```python\n--8<-- "(docs/examples/[^"]+\.py)"\n```$', re.M)
FIGURE = re.compile(r"(?P<open><!-- bench: (?P<key>[^ :]+)(?::(?P<field>\w+))? -->).*?(?P<close><!-- /bench -->)", re.S)


def pages() -> list[Path]:
    return sorted((ROOT / "docs").glob("*.md"))


def with_examples(text: str) -> str:
    def fill(m: re.Match[str]) -> str:
        code = (ROOT / m["path"]).read_text()
        fence = "`" * max(3, 1 + max((len(r) for r in re.findall("`+", code)), default=0))
        return f"{m['open']}{fence}python\n{code.rstrip()}\n{fence}\n{m['close']}"

    text = SNIPPET.sub(r"<!-- example: \1 -->\n```python\n```\n<!-- /example -->", text)
    return EXAMPLE.sub(fill, text)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _pick(items: list[Any], want: str, slug: Any, what: str) -> Any:
    """The one item whose slug is ``want`` or starts with ``want-``."""
    exact = [i for i in items if slug(i) == want]
    found = exact or [i for i in items if slug(i).startswith(want + "-")]
    if len(found) != 1:
        names = sorted(slug(i) for i in items)
        raise KeyError(f"{what} {want!r}: {len(found)} matches among {names}")
    return found[0]


def figure(results: dict[str, Any], key: str, field: str | None = None) -> str:
    section_name, table_key, case_key = key.split("/")
    if section_name not in results:
        raise KeyError(f"section {section_name!r} is not in {RESULTS.name}: {sorted(results)}")
    table = _pick(results[section_name]["tables"], table_key, lambda t: _slug(t["title"]), "table")
    row = Row(**_pick(table["rows"], case_key, lambda r: _slug(r["case"]), "case"))
    if field == "median":
        return row.cells()[1]
    if field is not None or row.ratio is None:
        raise KeyError(f"{key}: no {field or 'ratio'} (use :median)")
    return row.cells()[3]


def with_figures(text: str, results: dict[str, Any]) -> str:
    for line in re.findall(r"^[ \t]*<!-- bench:.*$", text, re.M):
        # Markdown reads a line opening with a comment as an HTML block: the list or table breaks
        raise ValueError(f"a bench figure starts a line, put a word before it: {line.strip()}")
    return FIGURE.sub(lambda m: f"{m['open']}{figure(results, m['key'], m['field'])}{m['close']}", text)


def render(text: str) -> str:
    return with_figures(with_examples(text), json.loads(RESULTS.read_text()))


def main(argv: list[str]) -> int:
    stale = []
    for page in pages():
        text = page.read_text()  # read, render and write in one step: others may edit the pages
        new = render(text)
        if new != text:
            stale.append(page.relative_to(ROOT))
            if "--check" not in argv:
                page.write_text(new)
    if stale and "--check" in argv:
        print(f"out of date: {', '.join(map(str, stale))}; run `{COMMAND}`", file=sys.stderr)
        return 1
    print(f"{'rewrote' if stale else 'up to date:'} {', '.join(map(str, stale)) or 'every page'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
