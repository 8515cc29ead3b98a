"""Audit log and history tables written by PostgreSQL triggers: ORM, bulk and raw SQL writes are
all recorded, in the writer's transaction, with only the changed columns."""

import datetime as dt

from sqlalchemy import URL, create_engine, select, text, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import Audited, Versioned, as_of, audit_entries, history, revert


class Base(DeclarativeBase):
    pass


class Invoice(Versioned, Audited, Base):
    __tablename__ = "invoices"
    __audit_exclude__ = frozenset({"internal_note"})  # never reaches the log

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str]
    amount: Mapped[int]
    internal_note: Mapped[str | None]
    deleted_at: Mapped[dt.datetime | None]  # NULL -> value is logged as SOFT_DELETE


def main(url: URL) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        # tests and scripts; applications get the same DDL from `alembic revision --autogenerate`
        sa_patterns.create_all(conn, Base.metadata)
    Session = sa_patterns.install(sessionmaker(engine))

    # who and why: sent once per transaction as transaction-local settings
    with sa_patterns.actor_scope("alice", request_id="req-42"), Session.begin() as s:
        s.add_all([Invoice(id=i, customer=f"c{i}", amount=100 * i, internal_note="vip") for i in (1, 2, 3)])

    with Session.begin() as s:
        invoice = s.get(Invoice, 1)
        assert invoice is not None
        invoice.amount = 150  # ORM unit of work
        s.execute(update(Invoice).where(Invoice.id > 1).values(amount=Invoice.amount + 1))  # bulk
        s.execute(text("UPDATE invoices SET customer = customer"))  # nothing changes: no entry
        s.execute(text("UPDATE invoices SET deleted_at = now() WHERE id = 3"))  # raw SQL

    with Session() as s:  # a rollback leaves no trace in the log
        s.execute(text("DELETE FROM invoices"))
        s.rollback()

    with Session() as s:
        entries = s.execute(audit_entries(Invoice)).all()
        assert [e.operation for e in entries] == ["INSERT"] * 3 + ["UPDATE"] * 3 + ["SOFT_DELETE"]
        inserted, updated = entries[0], entries[3]
        assert (inserted.actor_id, inserted.request) == ("alice", {"request_id": "req-42"})
        assert "internal_note" not in inserted.new_row
        assert (updated.old_row, updated.new_row, updated.changed_columns) == (
            {"amount": 100}, {"amount": 150}, ["amount"])
        assert entries[-1].actor_id is None  # raw SQL outside actor_scope: NULL, not an error

        # one row's story, from the history table
        invoice = s.get(Invoice, 1)
        assert invoice is not None
        versions = history(s, invoice)
        assert [(v.version, v.values["amount"]) for v in versions] == [(1, 100), (2, 150)]

        # the table as it was: a selectable you can filter and join
        then = as_of(Invoice, versions[0].valid_from)
        assert s.execute(select(then.c.amount).where(then.c.id == 1)).scalar_one() == 100

        revert(s, invoice, 1)  # an ordinary (audited, versioned) UPDATE at the next flush
        s.commit()
        assert [v.values["amount"] for v in history(s, invoice)] == [100, 150, 100]

    # the log is append-only
    with engine.connect() as conn:
        try:
            conn.execute(text("DELETE FROM audit_log"))
        except Exception as exc:
            assert "append-only" in str(exc)
        else:
            raise AssertionError("the audit log accepted a DELETE")
    engine.dispose()
