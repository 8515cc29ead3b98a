"""SERIALIZABLE with automatic re-runs: a concurrent writer forces a serialization failure."""

from sqlalchemy import URL, create_engine, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sa_patterns import transaction


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    balance: Mapped[int]


def main(url: URL) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO accounts (id, balance) VALUES (1, 100), (2, 0)"))
    SessionFactory = sessionmaker(engine)
    runs = []

    @transaction(SessionFactory, isolation_level="SERIALIZABLE", retries=5)
    def transfer(session: Session, src: int, dst: int, amount: int) -> None:
        runs.append(1)
        balance = session.scalar(select(Account.balance).where(Account.id == src))
        assert balance is not None
        if len(runs) == 1:
            # Simulate another request committing between our read and our write.
            with engine.begin() as other:
                other.execute(text("UPDATE accounts SET balance = balance + 50 WHERE id = 1"))
        session.execute(update(Account).where(Account.id == src).values(balance=balance - amount))
        session.execute(update(Account).where(Account.id == dst)
                        .values(balance=Account.balance + amount))

    transfer(1, 2, 30)
    assert len(runs) == 2  # the first run failed with SQLSTATE 40001 and was re-run whole
    with engine.connect() as conn:
        balances = dict(conn.execute(text("SELECT id, balance FROM accounts")).all())
    assert balances == {1: 120, 2: 30}  # 100 + 50 - 30: the concurrent deposit was not lost

    # The same as a block that is re-run:
    for attempt in transaction(SessionFactory):
        with attempt as session:
            session.execute(text("UPDATE accounts SET balance = balance + 1 WHERE id = 2"))
    engine.dispose()
