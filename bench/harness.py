"""Side-by-side timing: cases alternate within one run, medians and ratios against a baseline.

A benchmark module (``bench/bench_<name>.py``) exposes ``NAME``, ``TITLE`` and
``run(url: sqlalchemy.URL, reps: int) -> Section``. ``python -m bench`` runs them all and
rewrites each module's section of ``bench/RESULTS.md`` (between ``<!-- bench:NAME -->``
markers), so modules never overwrite each other's figures, and stores the same tables in
``bench/results.json``, from which ``tools/docs_sync.py`` quotes figures in docs/.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Row", "Section", "compare", "timed"]


@dataclass
class Row:
    case: str
    median: float
    low: float
    high: float
    ratio: float | None = None
    unit: str = "s"

    def cells(self) -> list[str]:
        ratio = f"{self.ratio:.2f}×" if self.ratio is not None else ""
        if self.unit == "s":
            fmt = lambda v: f"{v * 1000:.1f} ms"  # noqa: E731
        elif self.unit == "seconds":  # durations long enough that ms would only add digits
            fmt = lambda v: f"{v:,.1f} s"  # noqa: E731
        else:
            fmt = lambda v: f"{v:,.0f} {self.unit}"  # noqa: E731
        return [self.case, fmt(self.median), f"{fmt(self.low)} – {fmt(self.high)}", ratio]


@dataclass
class Table:
    title: str
    rows: list[Row]
    baseline: str | None = None

    def markdown(self) -> str:
        head = f"#### {self.title}\n\n| case | median | min – max | ratio |\n|---|---|---|---|\n"
        return head + "\n".join("| " + " | ".join(r.cells()) + " |" for r in self.rows) + "\n"


@dataclass
class Section:
    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"## {self.title}\n"]
        parts += [t.markdown() for t in self.tables]
        if self.notes:
            parts.append("\n".join(f"- {n}" for n in self.notes) + "\n")
        return "\n".join(parts)


FULL_ENV = "SA_PATTERNS_BENCH_FULL"


def sized(default: int, full: int) -> int:
    """A workload size: ``default`` keeps the whole default run under 10 minutes on a 2-core
    machine; ``python -m bench --full`` uses ``full``, the sizes the issues name."""
    return full if os.environ.get(FULL_ENV) == "1" else default


def timed(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    gc.collect()
    start = clock()
    fn()
    return clock() - start


def compare(
    title: str,
    cases: Mapping[str, Callable[[], object]],
    *,
    reps: int = 5,
    warmup: int = 1,
    baseline: str | None = None,
    setup: Callable[[str], object] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Table:
    """Run every case ``warmup + reps`` times, alternating cases within each repetition.

    ``setup(case)`` runs untimed before each timed call (e.g. to reset tables). The ratio of a
    case is the median of its per-repetition ratios against ``baseline`` (same repetition).
    ``clock=time.process_time`` measures this process's CPU instead of wall time: the client's
    own cost, steady when other processes share the machine.
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    began = time.monotonic()
    for rep in range(warmup + reps):
        order = list(cases) if rep % 2 == 0 else list(reversed(list(cases)))
        for name in order:
            if setup is not None:
                setup(name)
            elapsed = timed(cases[name], clock)
            if rep >= warmup:
                samples[name].append(elapsed)
    rows = []
    for name, values in samples.items():
        ratio = None
        if baseline is not None:
            ratio = statistics.median(v / b for v, b in zip(values, samples[baseline], strict=True))
        rows.append(Row(name, statistics.median(values), min(values), max(values), ratio))
    print(f"[bench] {time.monotonic() - began:6.1f} s  {title}", file=sys.stderr, flush=True)
    return Table(title, rows, baseline)


def consume(session: Any, phase: str, stmt: Any, children: str) -> int:
    """Run one read of a phase (pk / join / selectin / joinedload) and count what it loaded,
    touching ``children`` on each parent so eager loads are really used."""
    if phase == "join":
        return len(session.execute(stmt).all())
    result = session.scalars(stmt)
    if phase == "joinedload":
        result = result.unique()
    objects = result.all()
    if phase in ("selectin", "joinedload"):
        return sum(1 + len(getattr(o, children)) for o in objects)
    return len(objects)
