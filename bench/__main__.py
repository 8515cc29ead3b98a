"""``python -m bench [--only NAME ...] [--reps N] [--full] [--scale]``: run the benchmarks side by side,
rewrite their sections of ``bench/RESULTS.md`` and of ``bench/results.json`` (the same figures,
machine-readable, which ``tools/docs_sync.py`` quotes in docs/) and redraw the ratio charts under
``docs/img/``.

Each ``bench/bench_<name>.py`` exposes ``NAME``, ``TITLE`` and ``run(url, reps) -> Section``;
The default sizes keep the whole run under 10 minutes; ``--full`` uses the sizes the issues
name. ``--scale`` runs ``bench/scale.py`` instead (audit, search and tenant/soft-delete reads at 10k,
100k and 1M rows). ``python -m bench.instructions`` counts the audit triggers' backend instructions
under callgrind instead of timing them (repeatable on a noisy machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
RESULTS_JSON = HERE / "results.json"
IMG = ROOT / "docs" / "img"

PACKAGES = [
    "sa_patterns", "SQLAlchemy", "alembic", "psycopg", "cryptography",
    "sqlalchemy-continuum", "postgresql-audit", "sqlalchemy-searchable",
    "sqlalchemy-easy-softdelete", "sqlalchemy-utils",
]
SCALE_SIZES = (10_000, 100_000, 1_000_000)


def _modules(only: list[str] | None) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if only:
        names = [n for n in names if n.removeprefix("bench_") in only]
    return names


def _update(name: str, body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    elif name == "header":  # the environment line goes right under the title
        title, _, rest = text.partition("\n")
        text = f"{title}\n\n{block}\n{rest}"
    elif name == "runtime" and "<!-- /bench:header -->" in text:  # and the run time under it
        text = text.replace("<!-- /bench:header -->", f"<!-- /bench:header -->\n{block}", 1)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def _record(section: object, run: str) -> None:
    """Store a section's tables in ``results.json`` too, so docs quote figures instead of copying
    them by hand; keyed by section like RESULTS.md, so a partial run keeps the other sections."""
    data = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    data[section.name] = {  # type: ignore[attr-defined]
        "title": section.title,  # type: ignore[attr-defined]
        "run": run,
        "tables": [dataclasses.asdict(t) for t in section.tables],  # type: ignore[attr-defined]
    }
    RESULTS_JSON.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def _versions() -> str:
    found = []
    for package in PACKAGES:
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return ", ".join(found)


def _chart(section: object, name: str) -> Path | None:
    """A horizontal bar chart of every table's ratios (1.0 = the baseline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = [t for t in section.tables if any(r.ratio is not None for r in t.rows)]  # type: ignore[attr-defined]
    if not tables:
        return None
    height = sum(len(t.rows) for t in tables) * 0.32 + len(tables) * 0.7 + 0.5
    fig, axes = plt.subplots(len(tables), 1, figsize=(8, max(2.5, height)), squeeze=False)
    for ax, table in zip(axes[:, 0], tables, strict=True):
        rows = [r for r in table.rows if r.ratio is not None]
        ax.barh([r.case for r in rows], [r.ratio for r in rows], color="#4a7ab5")
        ax.axvline(1.0, color="#999", linewidth=0.8, linestyle="--")
        ax.invert_yaxis()
        ax.set_title(table.title, fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
        for i, r in enumerate(rows):
            ax.text(r.ratio, i, f" {r.ratio:.2f}×", va="center", fontsize=7)
        ax.set_xlabel("ratio (lower is better)", fontsize=8)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / f"bench-{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", nargs="*", help="benchmark names (e.g. soft_delete audit)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--scale", action="store_true", help="10k/100k/1M-row growth runs")
    parser.add_argument("--sizes", nargs="*", type=int, help="row counts for --scale")
    parser.add_argument("--no-charts", action="store_true")
    parser.add_argument(
        "--full", action="store_true",
        help="the workload sizes the issues name (5,000-row audit with sqlalchemy-continuum, ...); "
        "about twice as long as the default run",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.harness import FULL_ENV

    if args.full:
        os.environ[FULL_ENV] = "1"  # read by bench.harness.sized() as each module is imported
    import sqlalchemy
    from sqlalchemy import create_engine

    from sa_patterns.database import scratch_database, server

    srv = server()
    try:
        eng = create_engine(srv.url)
        with eng.connect() as conn:
            version = conn.exec_driver_sql("SHOW server_version").scalar()
        eng.dispose()
        where = "embedded" if srv.embedded else "DATABASE_URL"
        _update(
            "header",
            f"_Last run {datetime.date.today()}: PostgreSQL {version} ({where}), "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, SQLAlchemy "
            f"{sqlalchemy.__version__}. Versions: {_versions()}._",
        )
        if args.scale:
            from bench import scale

            sizes = tuple(args.sizes or SCALE_SIZES)
            with scratch_database(srv.url, prefix="sap_bench") as url:
                section = scale.run_scale(url, sizes)
            IMG.mkdir(parents=True, exist_ok=True)
            chart = IMG / "bench-scale.png"
            scale.chart(section, chart)
            stamp = f"_Run {datetime.date.today()} on PostgreSQL {version}, {os.cpu_count()} cores._\n"
            _update("scale", section.markdown() + "\n" + stamp + f"\n![scale](../docs/img/{chart.name})\n")
            print(section.markdown(), flush=True)
            return 0
        started = time.monotonic()
        for module_name in _modules(args.only):
            module = importlib.import_module(f"bench.{module_name}")
            began = time.monotonic()
            with scratch_database(srv.url, prefix="sap_bench") as url:
                section = module.run(url, args.reps)
            stamp = (
                f"_Run {datetime.date.today()} on PostgreSQL {version}, {os.cpu_count()} cores; "
                f"median of {args.reps} repetitions after a warm-up, cases alternating; "
                f"{'full' if args.full else 'default'} sizes; "
                f"this section took {time.monotonic() - began:.0f} s._\n"
            )
            chart = None if args.no_charts else _chart(section, section.name)
            body = section.markdown() + "\n" + stamp
            if chart is not None:
                body += f"\n![{section.title}](../docs/img/{chart.name})\n"
            _update(section.name, body)
            _record(section, stamp.strip("_\n"))
            print(section.markdown(), flush=True)
        if not args.only:  # the whole run: the default one's wall time is part of the contract
            run = "`python -m bench --full`" if args.full else "`python -m bench` (default sizes)"
            _update("runtime", f"_The whole run, {run}, took "
                    f"{(time.monotonic() - started) / 60:.1f} min (limit for the default run: 10 min)._")
    finally:
        if srv.stop is not None:
            srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
