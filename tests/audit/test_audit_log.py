"""Audited: what the triggers write into audit_log, for ORM, bulk and raw SQL, sync and async.

The writes and reads run as the plugin's app role (NOSUPERUSER NOBYPASSRLS, owning nothing): the
triggers run as the writer, and the log's row-level security shows the app role the entries of
tables without tenants and, under a tenant, that tenant's. Schemas and DDL are the owner role's
(``owner_engine``: it built the module's schema and owns the log, whose RLS is not forced);
what needs a superuser (``LOAD 'auto_explain'``) says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from audit_models import Base, Card, Doc, Note, Pair
from sqlalchemy import (
    DDL,
    JSON,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import (
    Audited,
    ConfigurationError,
    MissingGrant,
    Searchable,
    Versioned,
    audit_entries,
)
from sa_patterns.audit import audit_log_table, audit_objects
from sa_patterns.schema import register
from sa_patterns.testing.plugin import SQL


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return Base.metadata


def log(sql: SQL, table: str | None = None) -> list[Any]:
    where = "WHERE table_name LIKE :t" if table else ""
    return sql(
        "SELECT operation, primary_key, old_row, new_row, changed_columns, actor_id, request, "
        f"tenant_id, table_name, transaction_id FROM audit_log {where} ORDER BY id",
        **({"t": f"%.{table}"} if table else {}),
    )


def test_orm_insert_update_delete_are_logged_with_only_the_changes(session: Session, sql: SQL, db_schema: str) -> None:
    doc = Doc(id=1, title="a", price=10, tenant_id=7)
    session.add(doc)
    session.flush()
    doc.price = 11
    session.flush()
    session.delete(doc)
    session.flush()
    assert log(sql, "au_doc") == []  # tenant 7's entries: RLS shows them under tenant 7 only
    with sa_patterns.tenant_scope(7):
        rows = log(sql, "au_doc")
    assert [r.operation for r in rows] == ["INSERT", "UPDATE", "DELETE"]
    ins, upd, dele = rows
    assert ins.table_name == f"{db_schema}.au_doc"
    assert ins.primary_key == {"id": 1}
    assert ins.old_row is None and ins.new_row["title"] == "a" and ins.new_row["price"] == 10
    assert upd.old_row == {"price": 10} and upd.new_row == {"price": 11}
    assert upd.changed_columns == ["price"]
    assert dele.old_row["price"] == 11 and dele.new_row is None and dele.changed_columns is None
    assert {r.tenant_id for r in rows} == {"7"}
    # one transaction: one transaction id, and it is PostgreSQL's
    xid = sql("SELECT pg_current_xact_id()::text::bigint")[0][0]
    assert {r.transaction_id for r in rows} == {xid}


def test_bulk_and_raw_sql_are_logged_once_per_changed_row(session: Session, sql: SQL) -> None:
    session.execute(text("INSERT INTO au_doc (id, title, price) SELECT g, 't' || g, g FROM generate_series(1, 50) g"))
    # ORM bulk UPDATE: only the 25 rows whose value really changes get an entry
    session.execute(update(Doc).values(price=Doc.price + (Doc.id % 2)))
    # raw SQL touching every row without changing anything: no entry at all
    session.execute(text("UPDATE au_doc SET title = title"))
    session.execute(delete(Doc).where(Doc.id > 45))
    ops = [r.operation for r in log(sql, "au_doc")]
    assert ops.count("INSERT") == 50
    assert ops.count("UPDATE") == 25
    assert ops.count("DELETE") == 5
    # raw SQL without actor_scope logs NULL, not an error
    assert {r.actor_id for r in log(sql, "au_doc")} == {None}


def test_actor_and_request_come_from_actor_scope_and_session_info(session_factory: Any, sql: SQL) -> None:
    with sa_patterns.actor_scope("alice", ip="10.0.0.1"), session_factory() as s:
        s.add(Doc(id=1, title="a"))
        s.commit()
    with session_factory() as s:
        s.info["actor_id"] = 42
        s.execute(update(Doc).values(title="b"))
        s.commit()
    rows = log(sql, "au_doc")
    assert (rows[0].actor_id, rows[0].request) == ("alice", {"ip": "10.0.0.1"})
    # (the request metadata of the first session is still set: both "transactions" are
    # savepoints of the fixture's one outer transaction, where set_config(..., true) lives)
    assert rows[1].actor_id == "42"


def test_soft_delete_and_restore_are_their_own_operations(session: Session, sql: SQL) -> None:
    doc = Doc(id=1, title="a")
    session.add(doc)
    session.flush()
    doc.deleted_at = datetime.now(UTC)
    session.flush()
    doc.deleted_at = None
    session.flush()
    # the real mixin, through its own API
    note = Note(id=1, body="x")
    session.add(note)
    session.flush()
    note.soft_delete()
    session.flush()
    note.restore()
    session.flush()
    restored = sql("SELECT deleted_at IS NULL FROM au_note WHERE id = 1")[0][0]
    assert [r.operation for r in log(sql, "au_doc")] == ["INSERT", "SOFT_DELETE", "RESTORE"]
    assert [r.operation for r in log(sql, "au_note")] == ["INSERT", "SOFT_DELETE"] + (["RESTORE"] if restored else [])
    soft = log(sql, "au_doc")[1]
    assert soft.old_row == {"deleted_at": None} and soft.new_row["deleted_at"] is not None


def test_excluded_columns_never_reach_the_log(session: Session, sql: SQL) -> None:
    doc = Doc(id=1, title="a", password="hunter2")
    session.add(doc)
    session.flush()
    doc.password = "swordfish"  # only an excluded column changes: no entry
    session.flush()
    doc.title = "b"
    doc.password = "letmein"
    session.flush()
    session.delete(doc)
    session.flush()
    rows = log(sql, "au_doc")
    assert [r.operation for r in rows] == ["INSERT", "UPDATE", "DELETE"]
    dump = json.dumps([list(r) for r in rows], default=str)
    assert "password" not in dump
    assert not any(p in dump for p in ("hunter2", "swordfish", "letmein"))
    assert rows[1].changed_columns == ["title"]


def test_composite_key_and_key_change(session: Session, sql: SQL) -> None:
    session.add_all([Pair(a=1, b="x", note="n"), Pair(a=2, b="y")])
    session.flush()
    session.execute(text("UPDATE au_pair SET b = 'z' WHERE a = 1"))
    rows = log(sql, "au_pair")
    assert [r.primary_key for r in rows[:2]] == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    # transition tables do not say which old row became which new one: a key change is
    # recorded as the old key's DELETE and the new key's INSERT, both complete rows
    assert [(r.operation, r.primary_key) for r in rows[2:]] == [
        ("DELETE", {"a": 1, "b": "x"}),
        ("INSERT", {"a": 1, "b": "z"}),
    ]
    assert rows[3].new_row == {"a": 1, "b": "z", "note": "n"}


def test_key_values_that_need_json_escaping(session: Session, sql: SQL) -> None:
    """The key is built as JSON text: quotes, backslashes, control and non-ASCII characters
    in a text key must arrive as the same value, for INSERT, UPDATE and DELETE alike."""
    odd = 'q"\\\n\té'
    session.add(Pair(a=-7, b=odd, note="n"))
    session.flush()
    session.execute(text("UPDATE au_pair SET note = 'm' WHERE a = -7"))
    session.execute(text("DELETE FROM au_pair WHERE a = -7"))
    got = sql("SELECT operation, primary_key = jsonb_build_object('a', -7, 'b', CAST(:b AS text)) "
              "FROM audit_log WHERE table_name LIKE '%au_pair' ORDER BY id", b=odd)
    assert got == [("INSERT", True), ("UPDATE", True), ("DELETE", True)]


def test_encrypted_columns_are_logged_as_ciphertext(session: Session, sql: SQL) -> None:
    session.add(Card(id=1, number="4111 1111 1111 1111"))
    session.flush()
    card = session.get(Card, 1)
    assert card is not None
    card.number = "5500 0000 0000 0004"
    session.flush()
    rows = log(sql, "au_card")
    dump = json.dumps([list(r) for r in rows], default=str)
    # the whole values, as text and as hex bytes (a 4-digit fragment can occur in random
    # ciphertext hex by chance, which made this check flaky)
    for plain in ("4111 1111 1111 1111", "5500 0000 0000 0004"):
        assert plain not in dump and plain.encode().hex() not in dump
    stored = sql("SELECT encode(number, 'hex') FROM au_card")[0][0]
    assert rows[1].new_row["number"] == "\\x" + stored  # bytea rendered by to_json: the ciphertext


def test_rollback_leaves_no_rows(engine: Engine) -> None:
    factory = sessionmaker(engine)
    sa_patterns.install(factory)
    with engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one()
    with factory() as s:
        s.add(Doc(id=999, title="x"))
        s.flush()
        s.execute(text("UPDATE au_doc SET price = 5 WHERE id = 999"))
        assert s.execute(text("SELECT count(*) FROM audit_log")).scalar_one() == before + 2
        s.rollback()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one() == before
        assert conn.execute(text("SELECT count(*) FROM au_doc WHERE id = 999")).scalar_one() == 0


def test_the_log_is_append_only(session: Session, sql: SQL) -> None:
    """The app role holds SELECT, INSERT only: its UPDATE, DELETE and TRUNCATE are refused by
    the grants before any trigger; nothing changes."""
    session.add(Doc(id=1, title="a"))
    session.flush()
    for statement in ("UPDATE audit_log SET actor_id = 'mallory'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        # (install()'s wall turns SQLSTATE 42501 into MissingGrant)
        with pytest.raises(MissingGrant, match="permission denied for table audit_log"), session.begin_nested():
            session.execute(text(statement))
    assert len(log(sql, "au_doc")) == 1


@pytest.fixture
def owner_connection(owner_engine: Engine) -> Iterator[sa.Connection]:
    """The owner role's connection (the log's owner, all privileges) in a transaction rolled
    back after the test."""
    with owner_engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            outer.rollback()


def test_the_log_is_append_only_for_its_owner_too(owner_connection: sa.Connection) -> None:
    """The owner's privileges include UPDATE, DELETE and TRUNCATE: the guard trigger refuses."""
    conn = owner_connection
    conn.execute(text("INSERT INTO au_doc (id, title, price) VALUES (1, 'a', 0)"))
    for statement in ("UPDATE audit_log SET actor_id = 'mallory'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        with pytest.raises(Exception, match="append-only") as info, conn.begin_nested():
            conn.execute(text(statement))
        assert "insufficient_privilege" in type(info.value.orig).__name__.lower() or "InsufficientPrivilege" in repr(info.value)  # type: ignore[attr-defined]
    assert conn.scalar(text("SELECT count(*) FROM audit_log WHERE table_name LIKE '%.au_doc'")) == 1


def test_query_helpers_and_their_indexes(session: Session, sql: SQL, owner_engine: Engine) -> None:
    t0 = datetime.now(UTC) - timedelta(seconds=1)
    session.info["actor_id"] = "bob"
    doc = Doc(id=1, title="a")
    other = Doc(id=2, title="b")
    session.add_all([doc, other])
    session.flush()
    doc.title = "c"
    session.flush()
    by_obj = session.execute(audit_entries(doc)).all()
    assert [r.operation for r in by_obj] == ["INSERT", "UPDATE"]
    assert len(session.execute(audit_entries(Doc)).all()) == 3
    assert len(session.execute(audit_entries(Doc, primary_key=2)).all()) == 1
    assert len(session.execute(audit_entries(Doc, actor="bob", since=t0, operations=["UPDATE"])).all()) == 1
    assert session.execute(audit_entries(Doc, until=t0)).all() == []
    indexes = {r[0]: r[1] for r in sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'audit_log'")}
    assert any("USING hash (primary_key)" in d for d in indexes.values())
    assert any("(table_name, recorded_at)" in d for d in indexes.values())
    assert any("brin (recorded_at)" in d for d in indexes.values())
    assert any("(actor_id, recorded_at) WHERE (actor_id IS NOT NULL)" in d for d in indexes.values())
    # the by-row lookup uses the hash index on the key, read as the log's owner (the operator's
    # view: the log's RLS is not forced; under the app role's policy a jsonb equality, not
    # leakproof, cannot be an index condition)
    with owner_engine.connect() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(text(
            "EXPLAIN SELECT * FROM audit_log WHERE table_name = 'x.au_doc' AND primary_key = '{\"id\": 1}'")))
        conn.rollback()
    assert "audit_log_primary_key" in plan


def test_renamed_and_dropped_columns_keep_old_entries_readable(owner_engine: Engine) -> None:
    """DDL: the owner's (the role migrations run as)."""
    engine = owner_engine
    class LocalBase(DeclarativeBase):
        pass

    class Temp(Audited, LocalBase):
        __tablename__ = "au_temp"
        id: Mapped[int] = mapped_column(primary_key=True)
        old_name: Mapped[str | None]
        gone: Mapped[str | None]

    with engine.begin() as conn:
        # the module's audit_log exists already: create only this table and its objects
        LocalBase.metadata.create_all(conn, tables=[Temp.__table__])
        for entity in sa_patterns.schema.registered(LocalBase.metadata):
            if "au_temp" in entity.describe():
                for statement in entity.create_statements():
                    conn.execute(DDL(statement))
        conn.execute(text("INSERT INTO au_temp VALUES (1, 'x', 'y')"))
        conn.execute(text("ALTER TABLE au_temp RENAME COLUMN old_name TO new_name"))
        conn.execute(text("ALTER TABLE au_temp DROP COLUMN gone"))
        old = conn.execute(text("SELECT new_row FROM audit_log WHERE table_name LIKE '%.au_temp'")).scalar_one()
        assert old == {"id": 1, "old_name": "x", "gone": "y"}
        # the migration that renames also replaces the function (autogenerate does it: the
        # function body changes with the columns); then new changes use the new names
        class NewBase(DeclarativeBase):
            pass

        class Temp2(Audited, NewBase):
            __tablename__ = "au_temp"
            id: Mapped[int] = mapped_column(primary_key=True)
            new_name: Mapped[str | None]

        for entity in sa_patterns.schema.registered(NewBase.metadata):
            if entity.kind == "function" and entity.name == "au_temp_audit":  # type: ignore[attr-defined]
                for statement in entity.create_statements():
                    conn.execute(DDL(statement))
        conn.execute(text("UPDATE au_temp SET new_name = 'z'"))
        rows = conn.execute(text(
            "SELECT old_row, new_row FROM audit_log WHERE table_name LIKE '%.au_temp' ORDER BY id")).all()
        assert rows[-1] == ({"new_name": "x"}, {"new_name": "z"})
        assert rows[0][1]["old_name"] == "x"
        conn.execute(text("DROP TABLE au_temp"))
        conn.execute(text("DROP FUNCTION au_temp_audit()"))
        conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        conn.execute(text("DELETE FROM audit_log WHERE table_name LIKE '%.au_temp'"))
        conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


@contextmanager
def created(engine: Engine, md: MetaData) -> Iterator[None]:
    """``md``'s schema with its tables and toolkit objects for one test, dropped after it."""
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {md.schema}"))
        sa_patterns.create_all(conn, md)
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {md.schema} CASCADE"))


def test_lean_log_has_only_the_chosen_indexes_and_still_records(engine: Engine, owner_engine: Engine) -> None:
    md = MetaData(schema="au_lean")
    audit_log_table(md, indexes=("primary_key", "recorded_at"))

    class LeanBase(DeclarativeBase):
        metadata = md

    class Lean(Audited, LeanBase):
        __tablename__ = "lean"
        id: Mapped[int] = mapped_column(primary_key=True)
        note: Mapped[str | None]

    with created(owner_engine, md), engine.begin() as conn:
        conn.execute(text("INSERT INTO au_lean.lean VALUES (1, 'a')"))
        conn.execute(text("UPDATE au_lean.lean SET note = 'b'"))
        indexes = conn.execute(text(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'au_lean' "
            "AND tablename = 'audit_log' ORDER BY 1")).scalars().all()
        assert indexes == ["audit_log_pkey", "audit_log_primary_key", "audit_log_recorded_at"]
        logged = conn.execute(text(
            "SELECT operation, changed_columns FROM au_lean.audit_log ORDER BY id")).all()
        assert logged == [("INSERT", None), ("UPDATE", ["note"])]
    for bad in (("primary_key", "tenant"), "table"):
        with pytest.raises(ConfigurationError, match="indexes="):
            audit_log_table(MetaData(), indexes=bad)


def test_columns_without_an_equality_operator(engine: Engine, owner_engine: Engine) -> None:
    """json and json[] have no ``=``: they are compared as text, and an UPDATE of them works."""
    md = MetaData(schema="au_types")
    table = Table(
        "doc", md,
        Column("id", Integer, primary_key=True),
        Column("body", JSON),
        Column("parts", postgresql.ARRAY(JSON)),
        Column("tags", postgresql.ARRAY(Integer)),
    )
    register(md, *audit_objects(table, audit_log_table(md)))
    with created(owner_engine, md):
        with engine.begin() as conn:
            conn.execute(text("""INSERT INTO au_types.doc VALUES (1, '{"a": 1}', ARRAY['{"p": 1}'::json], '{1}')"""))
            conn.execute(text("""UPDATE au_types.doc SET parts = ARRAY['{"p": 2}'::json]"""))
            conn.execute(text("""UPDATE au_types.doc SET body = '{"a": 1}', tags = '{1}'"""))  # no change
            logged = conn.execute(text(
                "SELECT operation, old_row, new_row, changed_columns FROM au_types.audit_log ORDER BY id")).all()
        assert [r.operation for r in logged] == ["INSERT", "UPDATE"]
        assert tuple(logged[1])[1:] == ({"parts": [{"p": 1}]}, {"parts": [{"p": 2}]}, ["parts"])


def test_generated_columns_are_not_logged(engine: Engine, owner_engine: Engine) -> None:
    """Searchable's tsvector (a generated column) is derived from logged columns: it appears
    neither in the rows nor among the changed columns."""
    md = MetaData(schema="au_gen")

    class GenBase(DeclarativeBase):
        metadata = md

    class Post(Audited, Searchable, GenBase):
        __tablename__ = "post"
        __searchable__ = {"title": "A"}
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(100))

    with created(owner_engine, md):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO au_gen.post (id, title) VALUES (1, 'hello world')"))
            conn.execute(text("UPDATE au_gen.post SET title = 'goodbye world'"))
            conn.execute(text("DELETE FROM au_gen.post"))
            logged = conn.execute(text(
                "SELECT operation, old_row, new_row, changed_columns FROM au_gen.audit_log ORDER BY id")).all()
            vector = conn.execute(text(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'au_gen' "
                "AND table_name = 'post' AND column_name = 'search_vector' AND is_generated = 'ALWAYS'")).scalar()
        assert vector == 1  # the column is there, generated by PostgreSQL
        assert [tuple(r) for r in logged] == [
            ("INSERT", None, {"id": 1, "title": "hello world"}, None),
            ("UPDATE", {"title": "hello world"}, {"title": "goodbye world"}, ["title"]),
            ("DELETE", {"id": 1, "title": "goodbye world"}, None, None),
        ]


def test_tables_wider_than_a_function_call_can_take(engine: Engine, owner_engine: Engine) -> None:
    """PostgreSQL passes at most 100 arguments to a function: a 130-column table's changes
    are still logged (and versioned), whichever group of columns an UPDATE touches."""
    md = MetaData(schema="au_wide")

    class WideBase(DeclarativeBase):
        metadata = md

    columns = {f"c{i}": Column(Integer) for i in range(130)}
    Wide = type(
        "Wide", (Versioned, Audited, WideBase),
        {"__tablename__": "wide", "id": Column(Integer, primary_key=True), **columns},
    )
    with created(owner_engine, md):
        with Session(engine) as s:
            s.add(Wide(id=1))
            s.commit()
            for changes in ({"c5": 1, "c120": 2}, {"c125": 3}, {"c0": 4}):
                s.execute(update(Wide).values(**changes))
                s.commit()
            s.execute(update(Wide).values(c1=None))  # no value changes: no entry
            s.commit()
        with engine.connect() as conn:
            logged = conn.execute(text(
                "SELECT operation, old_row, new_row, changed_columns FROM au_wide.audit_log "
                "WHERE operation = 'UPDATE' ORDER BY id")).all()
            versions = conn.execute(text("SELECT count(*), max(c125) FROM au_wide.wide_history")).one()
        assert [tuple(r) for r in logged] == [
            ("UPDATE", {"c5": None, "c120": None}, {"c5": 1, "c120": 2}, ["c5", "c120"]),
            ("UPDATE", {"c125": None}, {"c125": 3}, ["c125"]),
            ("UPDATE", {"c0": None}, {"c0": 4}, ["c0"]),
        ]
        assert tuple(versions) == (4, 3)


# Changes applied once to a single row and once to two rows in one statement: the trigger takes
# its one-row path for the first and its set-based statement for the second.
_TYPED_CHANGES: list[str] = [
    "note = 'it''s \"quoted\" \\ é ☃'",
    "note = note",  # the same value: no entry
    "label = upper(label)",  # a case-only change is a change
    "label = label",
    "amount = amount + 0.5, ratio = ratio * 2",
    "amount = amount::numeric(12, 4)",  # 1.5 and 1.5000 are equal
    "flag = NOT flag",
    "at = at + interval '1 hour'",
    "at = at AT TIME ZONE 'UTC' AT TIME ZONE 'UTC'",  # the same instant
    "doc = doc || '{\"k\": [1, 2]}'",
    "raw = '{\"a\":  1,\"b\":2}'",  # json: whitespace alone is no change
    "raw = '{\"a\": 2, \"b\": 2}'",
    "tags = tags || ARRAY[3]",
    "blob = blob || '\\x00ff'::bytea",
    "note = NULL",
    "note = 'back'",
    "secret = 'never logged'",  # excluded: alone, no entry
    "deleted_at = now()",
    "deleted_at = NULL",
    "tenant_id = tenant_id + 1",
]


def test_one_row_and_many_row_statements_log_alike(engine: Engine, owner_engine: Engine) -> None:
    """An UPDATE of one row (what an ORM flush sends) is compared in plpgsql as jsonb; an UPDATE
    of several rows by the set-based statement with typed comparisons. Both must write the
    same entries, for every kind of value and for changes that are not changes. Written as the
    app role; the entries carry tenants, so the log's owner reads them all."""
    md = MetaData(schema="au_paths")
    table = Table(
        "t", md,
        Column("id", Integer, primary_key=True),
        Column("note", sa.Text), Column("label", String(40)),
        Column("amount", sa.Numeric(12, 2)), Column("ratio", sa.Float),
        Column("flag", sa.Boolean), Column("at", sa.DateTime(timezone=True)),
        Column("doc", postgresql.JSONB), Column("raw", JSON),
        Column("tags", postgresql.ARRAY(Integer)), Column("blob", sa.LargeBinary),
        Column("secret", sa.Text), Column("deleted_at", sa.DateTime(timezone=True)),
        Column("tenant_id", Integer),
    )
    register(md, *audit_objects(table, audit_log_table(md), exclude={"secret"}))
    with created(owner_engine, md):
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO au_paths.t SELECT g, 'n', 'Mixed Case', 1.5, 0.1, true, "
                "'2026-01-01 12:00+00', '{\"a\": 1}', '{\"a\": 1, \"b\": 2}', '{1,2}', '\\x01', "
                "'s', NULL, 7 FROM generate_series(1, 3) g"))
            for change in _TYPED_CHANGES:
                conn.exec_driver_sql(f"UPDATE au_paths.t SET {change} WHERE id = 1")
                conn.exec_driver_sql(f"UPDATE au_paths.t SET {change} WHERE id IN (2, 3)")
            conn.execute(text("UPDATE au_paths.t SET note = 'none' WHERE id = 99"))  # no row
        with owner_engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT primary_key ->> 'id', operation, old_row, new_row, changed_columns, tenant_id "
                "FROM au_paths.audit_log WHERE operation <> 'INSERT' ORDER BY id")).all()
        one = [tuple(r)[1:] for r in rows if r[0] == "1"]
        many = [tuple(r)[1:] for r in rows if r[0] == "2"]
        assert one == many
        assert len([r for r in rows if r[0] == "3"]) == len(one)
        assert [entry[3] for entry in one] == [
            ["note"], ["label"], ["amount", "ratio"], ["flag"], ["at"], ["doc"], ["raw"],
            ["tags"], ["blob"], ["note"], ["note"], ["deleted_at"], ["deleted_at"], ["tenant_id"],
        ]
        assert [entry[0] for entry in one][-3:] == ["SOFT_DELETE", "RESTORE", "UPDATE"]
        assert one[0][1:3] == ({"note": "n"}, {"note": 'it\'s "quoted" \\ é ☃'})
        assert one[2][1:3] == ({"amount": 1.5, "ratio": 0.1}, {"amount": 2.0, "ratio": 0.2})
        assert one[-1][4] == "8"  # the tenant after the change


def test_column_names_that_need_quoting_or_shadow_the_triggers_variables(engine: Engine, owner_engine: Engine) -> None:
    """Column names are identifiers in the trigger and keys in the log: mixed case, quotes,
    spaces, and names the function itself uses (its variables and aliases) all arrive intact,
    on the one-row path and on the set-based one."""
    md = MetaData(schema="au_names")
    names = ["Mixed Case", "it's", 'say "hi"', "sa_oj", "sa_table", "sa_o", "d"]
    table = Table("t", md, Column("id", Integer, primary_key=True), *(Column(n, Integer) for n in names))
    register(md, *audit_objects(table, audit_log_table(md)))
    with created(owner_engine, md):
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": i, **dict.fromkeys(names, 0)} for i in (1, 2, 3)])
            conn.execute(table.update().where(table.c.id == 1).values(dict.fromkeys(names, 1)))
            conn.execute(table.update().where(table.c.id > 1).values(dict.fromkeys(names, 1)))
            rows = conn.execute(text(
                "SELECT primary_key ->> 'id', old_row, new_row, changed_columns FROM au_names.audit_log "
                "WHERE operation = 'UPDATE' ORDER BY primary_key ->> 'id'")).all()
        expected = (dict.fromkeys(names, 0), dict.fromkeys(names, 1), names)
        assert [tuple(r) for r in rows] == [(str(i), *expected) for i in (1, 2, 3)]


def test_a_connection_keeps_logging_across_a_column_type_change(engine: Engine, owner_engine: Engine) -> None:
    """A pooled connection that has run the trigger keeps writing after another session changes
    a column's type. plpgsql caches the expressions of the one-row path (over typed record fields
    they failed from then on with 'type of parameter ... does not match') and the plan of the
    set-based statement. integer -> bigint leaves the function as it is; integer -> text changes
    how its values are written (a migration replaces the function: test_audit_alembic), and the
    one-row path, which reads jsonb, logs it even before that."""
    md = MetaData(schema="au_retype")
    table = Table("t", md, Column("id", Integer, primary_key=True), Column("v", Integer))
    register(md, *audit_objects(table, audit_log_table(md)))
    with created(owner_engine, md):
        with engine.begin() as conn:  # the app role writes; the owner changes the type
            conn.execute(text("INSERT INTO au_retype.t VALUES (1, 1), (2, 2)"))
        with engine.connect() as live:
            for _ in range(3):
                live.execute(text("UPDATE au_retype.t SET v = v + 1 WHERE id = 1"))
                live.commit()
            live.execute(text("UPDATE au_retype.t SET v = v + 1"))  # caches the set-based plan
            live.commit()
            with owner_engine.begin() as other:
                other.execute(text("ALTER TABLE au_retype.t ALTER v TYPE bigint"))
            live.execute(text("UPDATE au_retype.t SET v = 5000000000 WHERE id = 1"))
            live.commit()
            live.execute(text("UPDATE au_retype.t SET v = v + 1"))
            live.commit()
            with owner_engine.begin() as other:
                other.execute(text("ALTER TABLE au_retype.t ALTER v TYPE text"))
            live.execute(text("UPDATE au_retype.t SET v = 'five' WHERE id = 1"))
            live.commit()
            rows = live.execute(text(
                "SELECT primary_key, old_row, new_row FROM au_retype.audit_log "
                "WHERE operation = 'UPDATE' ORDER BY transaction_id, primary_key ->> 'id'")).all()
        assert [tuple(r) for r in rows][-4:] == [
            ({"id": 1}, {"v": 5}, {"v": 5000000000}),
            ({"id": 1}, {"v": 5000000000}, {"v": 5000000001}),
            ({"id": 2}, {"v": 3}, {"v": 4}),
            ({"id": 1}, {"v": "5000000001"}, {"v": "five"}),
        ]


async def test_async_session_is_audited(async_session: AsyncSession) -> None:
    with sa_patterns.actor_scope("async-alice"):
        async_session.add(Doc(id=1, title="a"))
        await async_session.flush()
        await async_session.execute(update(Doc).values(price=3))
        rows = (await async_session.execute(audit_entries(Doc))).all()
    assert [(r.operation, r.actor_id) for r in rows] == [("INSERT", "async-alice"), ("UPDATE", "async-alice")]


# bad input -----------------------------------------------------------------------------------


def test_configuration_errors_teach() -> None:
    with pytest.raises(ConfigurationError, match="not columns"):

        class B1(DeclarativeBase):
            pass

        class Bad(Audited, B1):
            __tablename__ = "bad1"
            __audit_exclude__ = frozenset({"nope"})
            id: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(ConfigurationError, match="primary key"):

        class B2(DeclarativeBase):
            pass

        class Bad2(Audited, B2):
            __tablename__ = "bad2"
            __audit_exclude__ = frozenset({"id"})
            id: Mapped[int] = mapped_column(primary_key=True)

    with pytest.raises(ConfigurationError, match="string"):

        class B3(DeclarativeBase):
            pass

        class Bad3(Audited, B3):
            __tablename__ = "bad3"
            __audit_exclude__ = "secret"  # type: ignore[assignment]
            id: Mapped[int] = mapped_column(primary_key=True)
            secret: Mapped[str]

    md = MetaData()
    no_pk = Table("nopk", md, Column("x", Integer))
    with pytest.raises(ConfigurationError, match="no primary key"):
        audit_objects(no_pk, audit_log_table(md))
    with pytest.raises(ConfigurationError, match="already has its audit log"):
        audit_log_table(md, name="other_log")
    with pytest.raises(ConfigurationError, match="unknown audit operations"):
        audit_entries(Doc, operations=["UPSERT"])
    with pytest.raises(ConfigurationError, match="composite key"):
        audit_entries(Pair, primary_key=1)
    with pytest.raises(ConfigurationError, match="Audited model"):
        audit_entries(None)
    with pytest.raises(ConfigurationError, match="mapped class"):
        audit_entries(Table("t", MetaData(), Column("s", String)).c.s)


def test_abstract_and_inheriting_classes_register_once() -> None:
    class B(DeclarativeBase):
        pass

    class Abstract(Audited, B):
        __abstract__ = True

    class Parent(Abstract):
        __tablename__ = "au_parent"
        id: Mapped[int] = mapped_column(primary_key=True)
        kind: Mapped[str]
        __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "p"}

    class Child(Parent):
        __mapper_args__ = {"polymorphic_identity": "c"}

    names = sorted(e.describe() for e in sa_patterns.schema.registered(B.metadata))
    assert names.count("function au_parent_audit") == 1
    assert "audit_log" in B.metadata.tables
    assert Child.__table__ is Parent.__table__
    assert select(Child).get_final_froms()[0] is Parent.__table__


def test_cached_trigger_plans_never_pair_rows_with_a_nested_loop(superuser_engine: Engine) -> None:
    """The plan-cache trap, checked on the plans themselves (no timings): a 1-row UPDATE takes
    the one-row path (no statement over the transition tables' join); after a 2-row UPDATE on
    the connection, the plan the trigger reuses for a 200-row UPDATE pairs old and new rows with
    a hash or merge full join, never a nested loop over the transition tables. As the superuser:
    ``LOAD 'auto_explain'`` and its settings are a superuser's."""
    plans: list[str] = []
    with superuser_engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))  # type: ignore[union-attr]
        with conn.begin() as tx:
            conn.execute(text("INSERT INTO au_doc (id, title, price) SELECT g, 't', g FROM generate_series(1, 200) g"))
            conn.execute(text("LOAD 'auto_explain'"))
            for setting, value in (("log_min_duration", "0"), ("log_nested_statements", "on"),
                                   ("log_analyze", "off")):
                conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": f"auto_explain.{setting}", "v": value})
            conn.execute(text("SET LOCAL client_min_messages = log"))
            joined = "sa_old sa_o FULL JOIN sa_new sa_n"
            for _ in range(6):  # past plpgsql's custom plans: the generic plan is cached
                plans.clear()
                conn.execute(text("UPDATE au_doc SET price = price + 1 WHERE id = 1"))
                assert not [p for p in plans if joined in p]  # the one-row path
                assert [p for p in plans if "INSERT INTO" in p and "VALUES" in p]
                conn.execute(text("UPDATE au_doc SET price = price + 1 WHERE id <= 2"))
            plans.clear()
            conn.execute(text("UPDATE au_doc SET price = price + 1"))  # reuses it for 200 rows
            tx.rollback()
    trigger_plans = [p for p in plans if joined in p]
    assert len(trigger_plans) == 1
    assert "Full Join" in trigger_plans[0]
    assert "Nested Loop" not in trigger_plans[0]


def test_purge_is_the_owners_way_past_the_guard(engine: Engine, owner_connection: sa.Connection) -> None:
    from sa_patterns.audit import purge

    # the app role may not: lifting the guard is ALTER TABLE, the owner's (its own transaction,
    # rolled back before the owner's takes the log's lock)
    with sa_patterns.install(sessionmaker(engine))() as app:
        app.add(Doc(id=1, title="a"))
        app.flush()
        with pytest.raises(Exception, match="must be owner of table audit_log"):
            purge(app, Base.metadata, before=datetime.now(UTC) + timedelta(seconds=5))
        app.rollback()
    # the owner, in a session of its own
    owner = sa_patterns.install(sessionmaker(bind=owner_connection, join_transaction_mode="create_savepoint"))()
    owner.add(Doc(id=2, title="b"))
    owner.flush()
    cutoff = datetime.now(UTC) + timedelta(seconds=5)
    old = owner.execute(text("SELECT count(*) FROM audit_log")).scalar_one()
    assert old >= 1
    assert purge(owner, Base.metadata, before=cutoff) == old
    assert owner.execute(text("SELECT count(*) FROM audit_log")).scalar_one() == 0
    # the guard is back at once
    with pytest.raises(Exception, match="append-only"), owner.begin_nested():
        owner.execute(text("DELETE FROM audit_log"))
    with pytest.raises(ConfigurationError, match="no audit log"):
        purge(owner, MetaData(), before=cutoff)


def test_query_helpers_read_the_log_through_its_indexes(owner_engine: Engine) -> None:
    """On a log of 60,000 entries (60 tables, 200 actors, 60 days, analyzed), each helper's
    query is planned on the index meant for it, with the planner left free: a table's entries,
    one row's history, an actor's entries and a day of entries. As the log's owner (the
    operator's view: its RLS is not forced), which loads and analyzes it too."""
    engine = owner_engine
    md = MetaData(schema="au_plans")
    table = Table("t", md, Column("id", Integer, primary_key=True), Column("v", Integer))
    log = audit_log_table(md)
    register(md, *audit_objects(table, log))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with created(engine, md):
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO au_plans.audit_log (table_name, operation, primary_key, new_row, actor_id, "
                "transaction_id, recorded_at) "
                "SELECT CASE WHEN g % 60 = 0 THEN 'au_plans.t' ELSE 'au_plans.other_' || g % 60 END, "
                "'INSERT', jsonb_build_object('id', g), '{}', 'actor ' || g % 200, g, "
                ":start + g * interval '86 seconds' FROM generate_series(1, 60000) g"), {"start": start})
            conn.execute(text("ANALYZE au_plans.audit_log"))

        def plan(query: sa.Select[Any]) -> str:
            compiled = query.compile(dialect=engine.dialect)
            params = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in compiled.params.items()}
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(f"EXPLAIN {compiled}", params).all()
            return "\n".join(r[0] for r in rows)

        day = start + timedelta(days=30)
        assert "audit_log_table" in plan(audit_entries(table))
        assert "audit_log_primary_key" in plan(audit_entries(table, primary_key=60))
        assert "audit_log_actor" in plan(audit_entries(metadata=md, actor="actor 7"))
        assert "audit_log_recorded_at" in plan(audit_entries(metadata=md, since=day, until=day + timedelta(days=1)))
        # and the queries return what the log holds
        with engine.connect() as conn:
            assert len(conn.execute(audit_entries(table)).all()) == 1000
            assert [r.primary_key for r in conn.execute(audit_entries(table, primary_key=60))] == [{"id": 60}]
            assert len(conn.execute(audit_entries(metadata=md, actor="actor 7")).all()) == 300
