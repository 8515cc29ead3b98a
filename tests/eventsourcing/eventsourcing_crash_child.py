"""Child process of the crash test: runs the balance projection and stops dead mid-batch.

``python eventsourcing_crash_child.py URL SCHEMA BATCH_SIZE CRASH_AFTER`` applies events in
batches and, after ``CRASH_AFTER`` handler calls (inside an open batch transaction), prints
``CRASH-POINT`` and sleeps until the parent kills it with SIGKILL.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from eventsourcing_models import BankEvent, Checkpoint, balance_projection, events
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from sa_patterns.eventsourcing import ProjectionRunner, RecordedEvent


def main() -> None:
    url, schema, batch_size, crash_after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    projection = balance_projection()
    calls = 0

    def tripwire(session: Session, recorded: RecordedEvent[Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == crash_after:
            session.flush()
            print("CRASH-POINT", flush=True)
            time.sleep(600)

    for event_type in list(projection.event_types):
        projection.on(event_type)(tripwire)
    runner = ProjectionRunner(
        engine, BankEvent, checkpoints=Checkpoint, registry=events,
        projections=[projection], batch_size=batch_size,
    )
    runner.catch_up()  # waits for the settled horizon to pass everything already committed
    print("FINISHED-WITHOUT-CRASH", flush=True)


if __name__ == "__main__":
    main()
