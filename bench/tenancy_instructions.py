"""``python -m bench.tenancy_instructions``: the client's CPU instructions per operation of the
tenancy bench's phases, installed session against hand-written, counted by callgrind.

Wall-clock ratios on a 2-core machine shared with other jobs move by several per cent between
runs; the instructions the Python client executes do not. Each phase of ``bench_tenancy`` (the pk,
join, selectin and joinedload lookups, one-query transactions, tenant switches) runs once to warm
the caches, then ``N`` times inside ``sys.call_tracing`` with the garbage collector off: callgrind
counts only inside that call (``--toggle-collect``) and writes one total per phase
(``--dump-after``). The database's own work is in another process and is not counted.

Needs ``valgrind`` and ``DATABASE_URL``; run it under each SQLAlchemy line to compare. Prints a
table (instructions per operation, ratio against hand-written); ``--only txn1,switch`` runs
those phases only.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PHASES = ("pk", "join", "selectin", "joinedload", "txn1", "switch")
COUNT = 100


def _work(phase: str, manual: bool, count: int) -> None:
    from sqlalchemy import select, text

    import sa_patterns
    from bench import bench_tenancy as bt
    from bench.harness import consume

    factory = _FACTORIES["manual" if manual else "ours"]
    tenant = 3
    projects, tasks = bt._keys(tenant)
    if phase == "txn1":
        with sa_patterns.tenant_scope(tenant):
            for key in tasks[:count]:
                with factory.begin() as s:
                    s.scalar(text("SELECT :x"), {"x": key})
        return
    if phase == "switch":
        model = bt.PTask if manual else bt.Task
        with factory() as s:
            for n, key in enumerate(tasks[:count]):
                who = tenant + n % 2
                with sa_patterns.tenant_scope(who):
                    stmt = select(model).where(model.id == key)
                    if manual:
                        stmt = stmt.where(bt.PTask.tenant_id == who, bt.PTask.deleted_at.is_(None))
                    s.execute(stmt).scalars().all()
                    s.expunge_all()
        return
    stmt_for = bt._statements(manual, tenant)[phase]
    keys = tasks if phase == "pk" else projects
    with sa_patterns.tenant_scope(tenant), factory() as s:
        for key in keys[:count]:
            consume(s, phase, stmt_for(key), "tasks")
            s.expunge_all()


_FACTORIES: dict[str, object] = {}


def _child(url: str, count: int, phases: tuple[str, ...] = PHASES) -> None:
    """Inside valgrind: set up, warm every case, then one ``sys.call_tracing`` per case."""
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.orm import sessionmaker

    import sa_patterns
    from bench import bench_tenancy as bt

    bt.SCHEMA = f"bench_tenancy_ir_{os.getpid()}"  # its own: timed runs may go on beside it
    bt._setup(make_url(url))
    engine = create_engine(url, connect_args={"options": f"-csearch_path={bt.SCHEMA}"})
    _FACTORIES["manual"] = sessionmaker(engine)
    _FACTORIES["ours"] = sa_patterns.install(sessionmaker(engine))
    cases = [(phase, manual) for phase in phases for manual in (True, False)]
    for phase, manual in cases:
        _work(phase, manual, 60)
    for phase, manual in cases:
        gc.collect()
        gc.disable()
        sys.call_tracing(_work, (phase, manual, count))
        gc.enable()
    engine.dispose()
    with create_engine(url).begin() as conn:
        conn.execute(text(f"DROP SCHEMA {bt.SCHEMA} CASCADE"))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), tuple(sys.argv[4].split(",")))
        return 0
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL")
    phases = PHASES
    if len(sys.argv) > 2 and sys.argv[1] == "--only":  # e.g. --only txn1,switch
        phases = tuple(p for p in PHASES if p in sys.argv[2].split(","))
    with tempfile.TemporaryDirectory(prefix="sap_tenancy_ir_") as work:
        out = Path(work) / "cg.out"
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             "--toggle-collect=sys_call_tracing", "--dump-after=sys_call_tracing",
             f"--callgrind-out-file={out}", sys.executable, "-m", "bench.tenancy_instructions",
             "--child", url, str(COUNT), ",".join(phases)],
            check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        totals = []
        for i in range(1, 2 * len(phases) + 1):
            match = re.search(r"^(?:summary|totals): (\d+)", (Path(f"{out}.{i}")).read_text(), re.M)
            assert match is not None
            totals.append(int(match.group(1)) / COUNT)
    import sqlalchemy

    print(f"SQLAlchemy {sqlalchemy.__version__}: client instructions per operation")
    print("| phase | hand-written | sa_patterns | ratio |\n|---|---|---|---|")
    for n, phase in enumerate(phases):
        manual, ours = totals[2 * n], totals[2 * n + 1]
        print(f"| {phase} | {manual:,.0f} | {ours:,.0f} | {ours / manual:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
