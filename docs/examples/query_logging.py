"""log_queries: structured records with redacted parameters and a slow-query report."""

import logging

from sqlalchemy import URL, String, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_patterns import log_queries


class Base(DeclarativeBase):
    pass


class Login(Base):
    __tablename__ = "logins"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(100))


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def main(url: URL) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    handler = Collect()
    logger = logging.getLogger("sa_patterns.queries")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        # explain=True: EXPLAIN (ANALYZE, BUFFERS) for slow SELECTs -- development only.
        with log_queries(engine, slow_ms=50, explain=True) as log, Session(engine) as session:
            session.add(Login(email="a@example.com", password_hash="s3cret-hash"))
            session.commit()
            session.scalars(select(Login).where(Login.email == "a@example.com")).all()
            session.execute(text("SELECT pg_sleep(0.06)"))  # a deliberately slow statement
        print(log.report())
    finally:
        logger.removeHandler(handler)
    queries = [r.query for r in handler.records]  # type: ignore[attr-defined]
    assert any("INSERT INTO logins" in q.statement for q in queries)
    assert not any("s3cret-hash" in repr(q.parameters) for q in queries)  # redacted by default
    slow = [q for q in queries if q.slow]
    assert any("pg_sleep" in q.statement and q.plan and "actual time" in q.plan for q in slow)
    engine.dispose()
