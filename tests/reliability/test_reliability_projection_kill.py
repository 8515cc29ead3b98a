"""A projection catch-up whose backend is terminated mid-batch: the batch's read-model rows and
checkpoint roll back together, nothing is skipped or applied twice, and a re-run completes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import URL, Engine, Integer, String, create_engine, exc, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from test_reliability_faults import kill_when_running

import sa_patterns
from sa_patterns import (
    CheckpointMixin,
    EventMixin,
    EventRegistry,
    EventStore,
    Projection,
    ProjectionRunner,
    RecordedEvent,
)

EVENTS = 1_200
BATCH = 300


class Base(DeclarativeBase):
    pass


class KillEvent(EventMixin, Base):
    __tablename__ = "kill_events"


class KillCheckpoint(CheckpointMixin, Base):
    __tablename__ = "kill_checkpoints"


class Line(Base):
    __tablename__ = "kill_lines"
    stream: Mapped[str] = mapped_column(String(50), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)


registry = EventRegistry()


@registry.register("kill.ticked")
@dataclass(frozen=True)
class Ticked:
    n: int


lines = Projection("kill_lines")


@lines.on(Ticked)
def _line(session: Session, recorded: RecordedEvent[Any]) -> None:
    session.execute(text("SELECT pg_sleep(0.001) /* projection work */"))
    session.add(Line(stream=str(recorded.aggregate_id), version=recorded.version))


@pytest.fixture(scope="module")
def db(pg_url: URL, db_schema: str) -> Iterator[Engine]:
    engine = create_engine(pg_url.update_query_dict({"options": f"-csearch_path={db_schema},public"}), pool_pre_ping=True)
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)
    with Session(engine) as s:
        store = EventStore(s, KillEvent, registry=registry)
        for stream in range(4):
            store.append(f"s{stream}", [Ticked(i) for i in range(EVENTS // 4)], expected_version=0)
        s.commit()
    yield engine
    engine.dispose()


def test_killed_catch_up_resumes_without_gaps_or_doubles(db: Engine) -> None:
    runner = ProjectionRunner(db, KillEvent, checkpoints=KillCheckpoint, registry=registry,
                              projections=[lines], batch_size=BATCH)
    hunter = kill_when_running(db, "SELECT pg_sleep(0.001) /* projection work */%")
    with pytest.raises(exc.OperationalError):
        runner.run_once()
    assert hunter.killed()
    with db.connect() as conn:
        applied = conn.execute(select(func.count()).select_from(Line)).scalar_one()
    assert applied % BATCH == 0 and applied < EVENTS, "whole batches only, the killed one rolled back"
    assert runner.run_once() == EVENTS - applied  # resumes where the checkpoint says
    with db.connect() as conn:
        per_stream = dict(conn.execute(select(Line.stream, func.count()).group_by(Line.stream)).all())
        distinct = conn.execute(select(func.count()).select_from(select(Line.stream, Line.version).distinct().subquery())).scalar_one()
    assert per_stream == {f"s{i}": EVENTS // 4 for i in range(4)}
    assert distinct == EVENTS, "every event applied exactly once"
