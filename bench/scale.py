"""``python -m bench --scale``: how cost grows with table size (10k, 100k, 1M rows).

Three questions, each answered at every size on fresh tables:

* **audit**: a bulk UPDATE of every row of an ``Audited`` table vs the same UPDATE on a plain
  table: the cost per row must stay flat (statement-level triggers, one set-based INSERT).
* **search**: ``Model.search()`` for a rare word vs ``ILIKE``: the GIN-backed query must stay
  near-constant while ILIKE grows with the table.
* **soft delete + tenant reads**: primary-key lookups through an installed session vs the
  hand-written WHERE: the ratio must not grow with the table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import URL, Engine, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import Audited, Searchable, SoftDeleteMixin, TenantMixin

__all__ = ["run_scale"]


class Base(DeclarativeBase):
    pass


class AuditedRow(Audited, Base):
    __tablename__ = "sc_audited"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]


class PlainRow(Base):
    __tablename__ = "sc_plain"
    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]


class Doc(Searchable, Base):
    __tablename__ = "sc_docs"
    __searchable__ = {"title": "A", "body": "B"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    body: Mapped[str]


class Scoped(SoftDeleteMixin, TenantMixin, Base):
    __tablename__ = "sc_scoped"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Unscoped(Base):
    __tablename__ = "sc_unscoped"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(index=True)
    deleted_at: Mapped[int | None]
    name: Mapped[str]


@dataclass
class ScaleTable:
    """Rows of (size, values...) with named columns; charts one line per column."""

    title: str
    columns: list[str]
    unit: str
    lines: list[tuple[int, list[float]]] = field(default_factory=list)
    rows: list[object] = field(default_factory=list)  # not a ratio table: no bar chart

    def markdown(self) -> str:
        head = f"#### {self.title}\n\n| rows | " + " | ".join(self.columns) + " |\n"
        head += "|---|" + "---|" * len(self.columns) + "\n"
        return head + "".join(
            f"| {size:,} | " + " | ".join(
                f"{v:,.2f} {self.unit}" if i < len(values) - 1 else f"{v:.2f}×" for i, v in enumerate(values)
            ) + " |\n"
            for size, values in self.lines
        )


def _median(fn: Callable[[], object], reps: int = 5) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fill(engine: Engine, size: int) -> None:
    with engine.begin() as conn:
        for table in ("sc_audited", "sc_plain", "sc_docs", "sc_scoped", "sc_unscoped"):
            conn.execute(text(f"TRUNCATE {table}"))
        conn.execute(text("INSERT INTO sc_audited (id, n) SELECT g, 0 FROM generate_series(1, :n) g"), {"n": size})
        conn.execute(text("INSERT INTO sc_plain (id, n) SELECT g, 0 FROM generate_series(1, :n) g"), {"n": size})
        # ten rare needle rows, the rest filler text
        conn.execute(
            text(
                "INSERT INTO sc_docs (id, title, body) SELECT g, 'report ' || (g % 977), "
                "'quarterly figures and notes ' || md5(g::text) || CASE WHEN g % (:n / 10) = 0 "
                "THEN ' zqxneedle' ELSE '' END FROM generate_series(1, :n) g"
            ),
            {"n": size},
        )
        for table in ("sc_scoped", "sc_unscoped"):
            conn.execute(
                text(f"INSERT INTO {table} (id, tenant_id, name) SELECT g, 1 + g % 50, 'x' FROM generate_series(1, :n) g"),
                {"n": size},
            )
        conn.execute(text("ANALYZE"))


def run_scale(url: URL, sizes: Sequence[int]) -> object:
    from bench.harness import Section

    engine = create_engine(url)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)
    installed = sa_patterns.install(sessionmaker(engine))
    plain = sessionmaker(engine)
    audit = ScaleTable("bulk UPDATE of every row: cost per row", ["plain", "Audited", "ratio"], "µs")
    search = ScaleTable("rare-word query latency", ["Searchable.search()", "ILIKE", "ILIKE / search"], "ms")
    reads = ScaleTable("500 primary-key lookups (tenant + soft delete)", ["hand-written", "installed", "ratio"], "ms")
    for size in sizes:
        _fill(engine, size)

        def bulk(table: str) -> Callable[[], object]:
            def run() -> None:
                with engine.begin() as conn:
                    conn.execute(text(f"UPDATE {table} SET n = n + 1"))
            return run

        reps = 3 if size >= 1_000_000 else 5
        p, a = _median(bulk("sc_plain"), reps), _median(bulk("sc_audited"), reps)
        audit.lines.append((size, [p / size * 1e6, a / size * 1e6, a / p]))

        def ours() -> None:
            with Session(engine) as s:
                s.scalars(Doc.search("zqxneedle")).all()

        def ilike() -> None:
            with Session(engine) as s:
                s.scalars(select(Doc).where(Doc.body.ilike("%zqxneedle%"))).all()

        o, i = _median(ours), _median(ilike)
        search.lines.append((size, [o * 1000, i * 1000, i / o]))

        ids = [1 + (k * 7919) % size for k in range(500)]
        tenant_of = {k: 1 + k % 50 for k in ids}

        def scoped(ids: list[int] = ids, tenant_of: dict[int, int] = tenant_of) -> None:
            for k in ids:
                with sa_patterns.tenant_scope(tenant_of[k]), installed() as s:
                    s.scalars(select(Scoped).where(Scoped.id == k)).one()

        def hand_tx(ids: list[int] = ids, tenant_of: dict[int, int] = tenant_of) -> None:  # same transaction pattern as scoped(): one session per lookup
            for k in ids:
                with plain() as s:
                    s.scalars(select(Unscoped).where(
                        Unscoped.id == k, Unscoped.tenant_id == tenant_of[k], Unscoped.deleted_at.is_(None)
                    )).one()

        h, sc = _median(hand_tx, 3), _median(scoped, 3)
        reads.lines.append((size, [h * 1000, sc * 1000, sc / h]))
        print(f"scale {size:,}: audit {a / p:.2f}x, search {i / o:.0f}x faster, reads {sc / h:.2f}x", flush=True)
    engine.dispose()
    first, last = audit.lines[0], audit.lines[-1]
    per_row = [line[1][1] for line in audit.lines]
    notes = [
        f"Audit: Audited costs {per_row[0]:.1f} → {per_row[-1]:.1f} µs per updated row from "
        f"{first[0]:,} to {last[0]:,} rows (plain: {first[1][0]:.2f} → {last[1][0]:.2f} µs); "
        + ("flat per row: a statement-level trigger makes one call and one INSERT ... SELECT "
           "per statement, whatever the row count."
           if max(per_row) / min(per_row) < 1.3 else
           f"{per_row[-1] / per_row[0]:.1f}× per row over a {last[0] // first[0]}× larger table: "
           "the trigger is one call per statement; what grows is the log's heap, indexes and WAL "
           "leaving memory."),
        f"Search: the GIN-backed query goes from {search.lines[0][1][0]:.1f} ms to "
        f"{search.lines[-1][1][0]:.1f} ms while ILIKE goes from {search.lines[0][1][1]:.1f} ms to "
        f"{search.lines[-1][1][1]:.1f} ms.",
        f"Reads: {min(r[1][2] for r in reads.lines):.2f}–{max(r[1][2] for r in reads.lines):.2f}× "
        "the hand-written lookups. Each lookup is its own transaction in both columns, so the "
        "installed side pays per lookup what an application pays per transaction: one set_config "
        "at BEGIN and the session hooks. The table size does not change that cost.",
        "Measured on a shared 2-core machine: single points are noisy; read the trend.",
    ]
    return Section("scale", "Scale: 10k, 100k and 1M rows", [audit, search, reads], notes)  # type: ignore[list-item]


def chart(section: object, path: object) -> None:
    """Line charts of each table's values against table size (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = section.tables  # type: ignore[attr-defined]
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 3.4), squeeze=False)
    for ax, table in zip(axes[0], tables, strict=True):
        sizes = [size for size, _ in table.lines]
        for index, name in enumerate(table.columns[:2]):
            ax.plot(sizes, [values[index] for _, values in table.lines], marker="o", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(table.title, fontsize=8)
        ax.set_xlabel("rows", fontsize=8)
        ax.set_ylabel(table.unit, fontsize=8)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)  # type: ignore[arg-type]
    plt.close(fig)
