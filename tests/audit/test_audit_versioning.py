"""Versioned: the history table, history(), as_of() in joins, revert(); sync and async.

As the plugin's app role on the schema the owner role built (the triggers open and close
versions as the writer); DDL is the owner's, and what the app role may not do behind the
triggers' back (switch them off) is done with ``superuser_sql`` inside the test's transaction."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from audit_models import Base, Doc, Page
from sqlalchemy import DDL, Computed, Connection, Engine, Identity, MetaData, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_patterns
from sa_patterns import (
    Audited,
    ConfigurationError,
    EncryptedString,
    Keyring,
    NotFound,
    Searchable,
    Versioned,
    as_of,
    history,
    revert,
)
from sa_patterns.encryption import KeyContext
from sa_patterns.testing.plugin import SQL
from sa_patterns.versioning import Version, history_table


class RevBase(DeclarativeBase):
    pass


class Article(Versioned, Searchable, RevBase):
    """Generated columns of three kinds, which revert() must leave to PostgreSQL."""

    __tablename__ = "au_rev_article"
    __searchable__ = {"title": "A"}
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    title_length: Mapped[int | None] = mapped_column(Computed("length(title)", persisted=True))
    serial: Mapped[int] = mapped_column(Identity(always=True))


class EncBase(DeclarativeBase):
    pass


PATIENT_RING = Keyring({"k1": os.urandom(32)}, active="k1", index_keys={"i1": os.urandom(32)})
ASKED: set[tuple[str, str]] = set()  # the places the per-context provider was asked about


def per_place(context: KeyContext) -> Keyring:  # a per-context provider sees one place
    ASKED.add((context.table, context.column))
    return PATIENT_RING


class Patient(Versioned, EncBase):
    __tablename__ = "au_enc_patient"
    id: Mapped[int] = mapped_column(primary_key=True)
    ssn: Mapped[str] = mapped_column(EncryptedString(per_place, blind_index=True))


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> list[MetaData]:
    return [Base.metadata, RevBase.metadata, EncBase.metadata]


def stamp(session: Session) -> datetime:
    value: datetime = session.execute(text("SELECT clock_timestamp()")).scalar_one()
    return value


def test_versions_are_opened_and_closed_by_the_database(session: Session, sql: SQL) -> None:
    page = Page(id=1, title="v1")
    session.add(page)
    session.flush()
    page.title = "v2"
    session.flush()
    session.execute(text("UPDATE au_page SET views = views"))  # no real change: no version
    session.execute(update(Page).values(title="v3"))  # bulk: versioned too
    rows = sql("SELECT id, title, version, valid_from, valid_to FROM au_page_history ORDER BY version")
    assert [(r.title, r.version) for r in rows] == [("v1", 1), ("v2", 2), ("v3", 3)]
    assert rows[0].valid_to == rows[1].valid_from and rows[1].valid_to == rows[2].valid_from
    assert rows[2].valid_to is None
    session.delete(page)
    session.flush()
    assert sql("SELECT count(*) FROM au_page_history WHERE valid_to IS NULL")[0][0] == 0
    # a key reused after a delete continues the numbering
    session.add(Page(id=1, title="again"))
    session.flush()
    assert sql("SELECT max(version) FROM au_page_history WHERE id = 1")[0][0] == 4


def test_one_row_and_many_row_updates_version_alike(session: Session, sql: SQL) -> None:
    """A 1-row UPDATE (the trigger's one-row path) and a 2-row UPDATE (its set-based statement)
    close and open versions alike; a no-op opens none; a 1-row key change goes set-based."""
    session.add_all([Page(id=i, title="t") for i in (1, 2, 3)])
    session.flush()
    for where in ("id = 1", "id IN (2, 3)"):
        session.execute(text(f"UPDATE au_page SET title = 'u' WHERE {where}"))
        session.execute(text(f"UPDATE au_page SET title = title WHERE {where}"))  # no version
    session.execute(text("UPDATE au_page SET id = 10 WHERE id = 1"))
    rows = sql("SELECT id, version, title, valid_to IS NULL FROM au_page_history ORDER BY id, version")
    assert [tuple(r) for r in rows] == [
        (1, 1, "t", False), (1, 2, "u", False),
        (2, 1, "t", False), (2, 2, "u", True),
        (3, 1, "t", False), (3, 2, "u", True),
        (10, 1, "u", True),
    ]


def test_history_as_of_and_revert(session: Session, sql: SQL) -> None:
    page = Page(id=1, title="first")
    other = Page(id=2, title="other")
    session.add_all([page, other])
    session.flush()
    t1 = stamp(session)
    page.title = "second"
    session.flush()
    t2 = stamp(session)
    page.title = "third"
    session.flush()

    versions = history(session, page)
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.values["title"] for v in versions] == ["first", "second", "third"]
    assert versions[-1].is_current and not versions[0].is_current

    # as_of is a selectable: filter it, join it
    old = as_of(Page, t1)
    assert session.execute(select(old.c.title).where(old.c.id == 1)).scalar_one() == "first"
    at_t2 = as_of(Page, t2)
    joined = session.execute(
        select(Page.title, at_t2.c.title).join(at_t2, at_t2.c.id == Page.id).order_by(Page.id)
    ).all()
    assert joined == [("third", "second"), ("other", "other")]
    before_anything = as_of(Page, datetime(2000, 1, 1, tzinfo=UTC))
    assert session.execute(select(before_anything)).all() == []

    revert(session, page, 1)
    session.flush()
    assert sql("SELECT title FROM au_page WHERE id = 1")[0][0] == "first"
    assert [v.values["title"] for v in history(session, page)] == ["first", "second", "third", "first"]
    revert(session, page, versions[1])  # a Version object works too
    session.flush()
    assert page.title == "second"
    # the revert is an ordinary, audited UPDATE
    ops = sql("SELECT operation FROM audit_log WHERE table_name LIKE '%.au_page' ORDER BY id")
    assert [r[0] for r in ops][-2:] == ["UPDATE", "UPDATE"]
    with pytest.raises(NotFound, match="no version 99"):
        revert(session, page, 99)


def test_revert_leaves_generated_columns_to_postgresql(connection: Connection, sql: SQL) -> None:
    """PostgreSQL refuses a value for a generated column: revert() sets the columns they derive
    from and lets them follow (a Searchable search_vector, a Computed, an identity ALWAYS)."""
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    article = Article(id=1, title="first words")
    session.add(article)
    session.flush()
    article.title = "a second title"
    session.flush()
    revert(session, article, 1)
    session.flush()
    row = sql("SELECT title, title_length, serial, search_vector::text FROM au_rev_article")[0]
    assert tuple(row) == ("first words", 11, 1, "'first':1A 'word':2A")
    versions = sql("SELECT version, title, title_length FROM au_rev_article_history ORDER BY version")
    assert [tuple(r) for r in versions] == [(1, "first words", 11), (2, "a second title", 14), (3, "first words", 11)]
    assert [a.id for a in session.scalars(Article.search("words"))] == [1]


def test_encrypted_columns_are_versioned_as_ciphertext_that_decrypts(session: Session, sql: SQL) -> None:
    """The history copies an encrypted column's ciphertext as it is: its column type is bound to
    the source column, so history(), as_of() and revert() decrypt it (a copy of the source's
    type instance was refused, so such a model could not even be defined)."""
    patient = Patient(id=1, ssn="111-11")
    session.add(patient)
    session.flush()
    patient.ssn = "222-22"
    session.flush()
    stored = sql("SELECT ssn FROM au_enc_patient_history ORDER BY version")
    assert all(b"111-11" not in bytes(r.ssn) and b"222-22" not in bytes(r.ssn) for r in stored)
    source = sql("SELECT ssn FROM au_enc_patient")[0].ssn
    assert bytes(stored[-1].ssn) == bytes(source)  # the very ciphertext, not re-encrypted
    assert [v.values["ssn"] for v in history(session, patient)] == ["111-11", "222-22"]
    then = as_of(Patient, stamp(session))
    assert session.execute(select(then.c.ssn)).scalar_one() == "222-22"
    revert(session, patient, 1)
    session.flush()
    assert session.scalars(select(Patient.id).where(Patient.ssn == "111-11")).all() == [1]
    assert [v.values["ssn"] for v in history(session, patient)] == ["111-11", "222-22", "111-11"]
    assert {("au_enc_patient", "ssn")} == ASKED  # the history's reads asked for the source's keys


async def test_async_history_and_revert(async_session: AsyncSession) -> None:
    page = Page(id=1, title="a")
    async_session.add(page)
    await async_session.flush()
    page.title = "b"
    await async_session.flush()
    versions = await async_session.run_sync(history, page)
    assert [v.values["title"] for v in versions] == ["a", "b"]
    await async_session.run_sync(revert, page, 1)
    await async_session.flush()
    got = (await async_session.execute(select(as_of(Page, datetime.now(UTC))).where(text("id = 1")))).one()
    assert got.title == "a"


def test_history_table_follows_the_source_columns() -> None:
    hist = history_table(Page)
    assert [c.name for c in hist.columns] == ["id", "title", "views", "version", "valid_from", "valid_to"]
    assert [c.name for c in hist.primary_key.columns] == ["id", "version"]
    # no defaults, no NOT NULL beyond the key: old versions never block a source change
    assert all(c.nullable for c in hist.columns if c.name in ("title", "views"))
    assert all(c.server_default is None and c.default is None for c in hist.columns)


def test_configuration_errors_teach() -> None:
    with pytest.raises(ConfigurationError, match="version bookkeeping"):

        class B1(DeclarativeBase):
            pass

        class Bad(Versioned, B1):
            __tablename__ = "bad_v"
            id: Mapped[int] = mapped_column(primary_key=True)
            version: Mapped[int]

    with pytest.raises(ConfigurationError, match="not Versioned"):
        history_table(Doc)
    with pytest.raises(ConfigurationError, match="flush it"):
        history(None, Page(id=9, title="x"))  # type: ignore[arg-type]
    assert Version(1, datetime.now(UTC), None, {}).is_current


def test_columns_named_like_the_trigger_aliases(owner_engine: Engine) -> None:
    """Columns called o, n, d or sa_row must not shadow the triggers' row references. (DDL:
    the owner's; it also owns the log, whose RLS is not forced.)"""
    engine = owner_engine

    class LocalBase(DeclarativeBase):
        pass

    class Odd(Versioned, Audited, LocalBase):
        __tablename__ = "au_odd"
        id: Mapped[int] = mapped_column(primary_key=True)
        o: Mapped[int | None]
        n: Mapped[int | None]
        d: Mapped[int | None]

    history_tbl = history_table(Odd)
    with engine.begin() as conn:
        LocalBase.metadata.create_all(conn, tables=[Odd.__table__, history_tbl])
        for entity in sa_patterns.schema.registered(LocalBase.metadata):
            if "au_odd" in entity.describe():
                for statement in entity.create_statements():
                    conn.execute(DDL(statement))
        conn.execute(text("INSERT INTO au_odd VALUES (1, 1, 2, 3)"))
        conn.execute(text("UPDATE au_odd SET n = 20"))
        rows = conn.execute(text(
            "SELECT operation, old_row, new_row FROM audit_log WHERE table_name LIKE '%.au_odd' ORDER BY id")).all()
        assert rows == [("INSERT", None, {"id": 1, "o": 1, "n": 2, "d": 3}), ("UPDATE", {"n": 2}, {"n": 20})]
        versions = conn.execute(text("SELECT version, n FROM au_odd_history ORDER BY version")).all()
        assert versions == [(1, 2), (2, 20)]
        conn.execute(text("DROP TABLE au_odd, au_odd_history"))
        conn.execute(text("DROP FUNCTION au_odd_audit(), au_odd_history()"))
        conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        conn.execute(text("DELETE FROM audit_log WHERE table_name LIKE '%.au_odd'"))
        conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


def test_backfill_opens_version_one_for_existing_rows(session: Session, sql: SQL, superuser_sql: SQL) -> None:
    from sa_patterns.versioning import backfill

    session.add(Page(id=1, title="tracked"))
    session.flush()
    # rows written while the triggers were off (as before Versioned was added; only the
    # table's owner or a superuser may switch them off)
    superuser_sql("ALTER TABLE au_page DISABLE TRIGGER au_page_history_ins")
    session.execute(text("INSERT INTO au_page (id, title, views) VALUES (2, 'old', 0), (3, 'older', 0)"))
    superuser_sql("ALTER TABLE au_page ENABLE TRIGGER au_page_history_ins")
    assert backfill(session, Page) == 2
    assert backfill(session, Page) == 0  # idempotent
    rows = sql("SELECT id, version, valid_to FROM au_page_history ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, 1, None), (2, 1, None), (3, 1, None)]


def test_backfill_on_an_engine_runs_in_resumable_batches(owner_engine: Engine) -> None:
    """Given an engine (or a migration's connection in autocommit_block()), backfill() commits
    batch by batch through the backfill engine, which records its progress: a rerun is a no-op."""
    from sa_patterns.versioning import backfill

    class LocalBase(DeclarativeBase):
        pass

    class Ledger(Versioned, LocalBase):
        __tablename__ = "au_bf_ledger"
        id: Mapped[int] = mapped_column(primary_key=True)
        amount: Mapped[int]

    history_tbl = history_table(Ledger)
    with owner_engine.begin() as conn:
        LocalBase.metadata.create_all(conn, tables=[Ledger.__table__, history_tbl])
        for entity in sa_patterns.schema.registered(LocalBase.metadata):
            if "au_bf_ledger" in entity.describe():
                for statement in entity.create_statements():
                    conn.exec_driver_sql(statement.replace("%", "%%"))
    try:
        with owner_engine.begin() as conn:  # rows from before the table became Versioned
            conn.execute(text("ALTER TABLE au_bf_ledger DISABLE TRIGGER USER"))
            conn.execute(text("INSERT INTO au_bf_ledger SELECT g, g * 10 FROM generate_series(1, 2500) g"))
            conn.execute(text("ALTER TABLE au_bf_ledger ENABLE TRIGGER USER"))
        assert backfill(owner_engine, Ledger) == 2500
        assert backfill(owner_engine, Ledger) == 0
        with owner_engine.connect() as conn:
            assert conn.execute(text(
                "SELECT count(*), count(DISTINCT id), min(version), max(version) FROM au_bf_ledger_history"
            )).one() == (2500, 2500, 1, 1)
            batches, finished = conn.execute(text(
                "SELECT batches, finished_at IS NOT NULL FROM sa_patterns_backfill WHERE table_name LIKE '%au_bf_ledger'"
            )).one()
        assert batches >= 3 and finished  # 1,000 rows a batch by default
    finally:
        with owner_engine.begin() as conn:
            for entity in reversed(sa_patterns.schema.registered(LocalBase.metadata)):
                if "au_bf_ledger" in entity.describe():
                    for statement in entity.drop_sql():
                        conn.exec_driver_sql(statement.replace("%", "%%"))
            conn.execute(text("DROP TABLE au_bf_ledger, au_bf_ledger_history"))
            conn.execute(text("DELETE FROM sa_patterns_backfill WHERE table_name LIKE '%au_bf_ledger'"))
