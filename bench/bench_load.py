"""Load: 8 workers (4 threads, 4 asyncio tasks) for 60 s of mixed reads and writes on a model
that is audited, tenant-scoped, soft-deletable, searchable and encrypted at once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sqlalchemy import URL, create_engine

from bench.harness import Section
from bench.load import create_schema, invariants, run_load

NAME = "load"
TITLE = "Load: every pattern at once, 8 workers"


@dataclass
class LoadTable:
    title: str
    lines: list[tuple[str, int, float, float, float]]
    rows: list[object] = field(default_factory=list)  # no ratio chart for this one

    def markdown(self) -> str:
        out = f"#### {self.title}\n\n| operation | count | per second | p50 | p99 |\n|---|---|---|---|---|\n"
        for op, count, rate, p50, p99 in self.lines:
            lat = f"{p50:.1f} ms | {p99:.1f} ms" if p50 == p50 else "– | –"
            out += f"| {op} | {count:,} | {rate:,.1f} | {lat} |\n"
        return out


def run(url: URL, reps: int) -> Section:
    seconds = float(os.environ.get("SA_PATTERNS_LOAD_SECONDS", "60"))
    engine = create_engine(url)
    create_schema(engine)
    engine.dispose()
    result = run_load(url, seconds=seconds)
    summary = result.summary()
    lines = [(op, n, n / seconds, p50, p99) for op, (n, p50, p99) in summary.items()]
    total = sum(n for _, n, *_ in lines)
    lines.append(("all", total, total / seconds, float("nan"), float("nan")))
    problems = invariants(url, result)
    notes = [
        f"{seconds:.0f} s, 4 threads + 4 asyncio tasks, each its own tenant and actor; every "
        "operation is one transaction through an installed session.",
        "Invariants after the run (checked by SQL): "
        + ("all hold: audit log = changes made, no cross-tenant row, every ciphertext decrypts, "
           "every search vector equals its recomputation." if not problems else "; ".join(problems)),
        f"Errors during the run: {len(result.errors)}.",
    ]
    return Section(NAME, TITLE, [LoadTable("throughput and latency", lines)], notes)  # type: ignore[list-item]
