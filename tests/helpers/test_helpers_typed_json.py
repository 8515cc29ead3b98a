"""TypedJSON: jsonb documents validated in and out, in-place mutation tracking through
install(), errors naming the column, plain jsonb in migrations."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from alembic.autogenerate import compare_metadata, produce_migrations, render_python_code
from alembic.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import sa_patterns
import sa_patterns.alembic
from sa_patterns import ConfigurationError, InvalidData, TypedJSON
from sa_patterns.typed_json import _DataclassCodec


@dataclasses.dataclass
class Line:
    sku: str
    qty: int


@dataclasses.dataclass
class Address:
    city: str
    zip: str
    lines: list[Line] = dataclasses.field(default_factory=list)
    floor: int | None = None


class Prefs(pydantic.BaseModel):
    theme: str = "light"
    volume: int = pydantic.Field(default=5, ge=0, le=10)
    tags: list[str] = []


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "ty_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20), default="o")
    shipping: Mapped[Address | None] = mapped_column(TypedJSON(Address))
    prefs: Mapped[Prefs | None] = mapped_column(TypedJSON(Prefs))


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    Base.metadata.create_all(engine)
    yield
    Base.metadata.drop_all(engine)


def test_round_trip_stores_real_jsonb(session: Session, sql: Any) -> None:
    order = Order(id=1, shipping=Address("Oslo", "0150", [Line("a", 2)]), prefs=Prefs(tags=["x"]))
    session.add(order)
    session.flush()
    row = sql("SELECT jsonb_typeof(shipping) AS kind, shipping->>'city' AS city, "
              "shipping->'lines'->0->>'qty' AS qty, prefs->>'volume' AS vol FROM ty_orders")[0]
    assert (row.kind, row.city, row.qty, row.vol) == ("object", "Oslo", "2", "5")
    session.expire_all()
    loaded = session.get(Order, 1)
    assert loaded is not None
    assert loaded.shipping == Address("Oslo", "0150", [Line("a", 2)])
    assert isinstance(loaded.shipping.lines[0], Line)
    assert loaded.prefs == Prefs(tags=["x"])


def test_none_is_sql_null(session: Session, sql: Any) -> None:
    session.add(Order(id=2, shipping=None))
    session.flush()
    assert sql("SELECT shipping IS NULL AS n FROM ty_orders WHERE id = 2")[0].n is True


def test_in_place_mutations_are_saved(session: Session, sql: Any) -> None:
    session.add(Order(id=3, shipping=Address("Rome", "00100"), prefs=Prefs()))
    session.flush()
    session.expire_all()
    order = session.get(Order, 3)
    assert order is not None and order.shipping is not None and order.prefs is not None
    order.shipping.city = "Milan"
    order.shipping.lines.append(Line("b", 1))  # nested change
    order.prefs.tags.append("new")
    session.commit()  # with the test fixture: releases the savepoint
    row = sql("SELECT shipping->>'city' AS city, jsonb_array_length(shipping->'lines') AS n, "
              "prefs->'tags'->>0 AS tag FROM ty_orders WHERE id = 3")[0]
    assert (row.city, row.n, row.tag) == ("Milan", 1, "new")
    # after the flush the new state is the baseline: an untouched flush writes nothing
    session.flush()
    assert not session.dirty


def test_mutation_after_expiry_reload_is_saved(session: Session, sql: Any) -> None:
    session.add(Order(id=4, shipping=Address("Paris", "75001")))
    session.flush()
    order = session.get(Order, 4)
    assert order is not None
    session.expire(order, ["shipping"])
    assert order.shipping is not None
    order.shipping.city = "Lyon"  # mutate the freshly reloaded object
    session.flush()  # a partial reload keeps the object flagged: a bare flush() writes it
    assert sql("SELECT shipping->>'city' AS c FROM ty_orders WHERE id = 4")[0].c == "Lyon"


def test_unchanged_documents_are_not_rewritten(session: Session, query_counter: Any) -> None:
    session.add(Order(id=5, shipping=Address("Bern", "3000")))
    session.flush()
    session.expire_all()
    order = session.get(Order, 5)
    assert order is not None and order.shipping is not None
    query_counter.reset()
    session.flush()
    session.commit()
    assert not [s for s in query_counter.statements if s.startswith("UPDATE")]


def test_changes_after_a_flush_are_tracked(session: Session, sql: Any) -> None:
    order = Order(id=10, shipping=Address("Nice", "06000"))
    session.add(order)
    session.flush()
    assert order.shipping is not None
    order.shipping.city = "Cannes"
    session.flush()  # flagged again after the previous flush: a bare flush() writes it
    assert sql("SELECT shipping->>'city' AS c FROM ty_orders WHERE id = 10")[0].c == "Cannes"


def test_wrong_type_names_the_column(session: Session, sql: Any) -> None:
    session.add(Order(id=6, shipping={"city": "x", "zip": "y"}))  # type: ignore[arg-type]
    with pytest.raises(InvalidData, match=r"ty_orders\.shipping holds Address objects; got dict"):
        session.flush()
    session.rollback()


def test_invalid_value_after_mutation_names_the_column(session: Session) -> None:
    session.add(Order(id=7, prefs=Prefs()))
    session.flush()
    order = session.get(Order, 7)
    assert order is not None and order.prefs is not None
    order.prefs.volume = 99  # pydantic does not validate assignment by default
    with pytest.raises(InvalidData, match=r"ty_orders\.prefs: invalid Prefs: volume: Input should be less"):
        session.commit()
    session.rollback()


def test_bad_stored_document_names_the_column(session: Session, sql: Any) -> None:
    sql("""INSERT INTO ty_orders (id, name, shipping) VALUES (8, 'o', '{"city": 5, "zip": "1"}')""")
    with pytest.raises(InvalidData, match=r"ty_orders\.shipping: the stored document is not a valid Address"):
        session.get(Order, 8)


def test_without_install_assign_a_new_object(engine: Engine, connection: Any) -> None:
    plain = sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
    with plain() as s:
        s.add(Order(id=9, shipping=Address("A", "1")))
        s.flush()
        s.expire_all()
        order = s.get(Order, 9)
        assert order is not None and order.shipping is not None
        order.shipping = dataclasses.replace(order.shipping, city="B")
        s.flush()
        assert connection.execute(text("SELECT shipping->>'city' FROM ty_orders WHERE id = 9")).scalar() == "B"


def test_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="dataclass or a pydantic model"):
        TypedJSON(dict)


def test_dataclass_codec_without_pydantic() -> None:
    codec = _DataclassCodec(Address)
    loaded = codec.load({"city": "c", "zip": "z", "lines": [{"sku": "s", "qty": 1}], "floor": None})
    assert loaded == Address("c", "z", [Line("s", 1)])
    with pytest.raises(InvalidData, match=r"lines\.\[0\]\.qty: expected int"):
        codec.load({"city": "c", "zip": "z", "lines": [{"sku": "s", "qty": "1"}]})
    with pytest.raises(InvalidData, match="zip: field required"):
        codec.load({"city": "c"})
    with pytest.raises(InvalidData, match="unknown field 'street'"):
        codec.load({"city": "c", "zip": "z", "street": "s"})
    assert codec.dump(Address("c", "z")) == {"city": "c", "zip": "z", "lines": [], "floor": None}


async def test_async_round_trip_and_tracking(async_session: AsyncSession) -> None:
    async_session.add(Order(id=20, shipping=Address("Kyiv", "01001")))
    await async_session.flush()
    async_session.expire_all()
    order = await async_session.get(Order, 20)
    assert order is not None and order.shipping is not None
    order.shipping.zip = "02000"
    await async_session.commit()
    raw = (await async_session.execute(text("SELECT shipping->>'zip' FROM ty_orders WHERE id = 20"))).scalar()
    assert raw == "02000"
    found = (await async_session.scalars(select(Order).where(Order.shipping["city"].astext == "Kyiv"))).one()
    assert found is order


def test_alembic_renders_plain_jsonb_and_has_no_diff(engine: Engine) -> None:
    with engine.connect() as conn:
        opts = {**sa_patterns.alembic.configure_kwargs(), "target_metadata": Base.metadata}
        ctx = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(ctx, Base.metadata) == []
        md = MetaData()
        Table("ty_new", md, Column("id", Integer, primary_key=True), Column("doc", TypedJSON(Address)))
        ctx = MigrationContext.configure(conn, opts={**opts, "target_metadata": md})
        code = render_python_code(produce_migrations(ctx, md).upgrade_ops, render_item=opts["render_item"])
    assert "sa_patterns.TypedJSON.jsonb()" in code and "Address" not in code
    assert isinstance(eval("sa_patterns.TypedJSON.jsonb()", {"sa_patterns": sa_patterns}), JSONB)


def test_alembic_command_round_trip(tmp_path: Any, pg_url: Any, db_schema: str) -> None:
    """init → revision --autogenerate → upgrade → check (no diff) → change the model's shape
    (no diff: still jsonb) → add a column (one diff) → downgrade base leaves nothing."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from sa_patterns.cli.init import init

    schema = f"{db_schema}_cli"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"))

    def metadata(extra: bool) -> MetaData:
        md = MetaData()
        cols = [Column("id", Integer, primary_key=True), Column("doc", TypedJSON(Address))]
        if extra:
            cols.append(Column("prefs", TypedJSON(Prefs)))
        Table("ty_cli_orders", md, *cols)
        return md

    url = pg_url.update_query_dict({"options": f"-csearch_path={schema}"})
    cfg = Config(str(init(tmp_path / "migrations", metadata="unused:unused")))
    cfg.attributes["configure_logger"] = False
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    try:
        cfg.attributes["target_metadata"] = metadata(extra=False)
        command.revision(cfg, message="init", autogenerate=True)
        script = next((tmp_path / "migrations" / "versions").glob("*.py")).read_text()
        assert "sa_patterns.TypedJSON.jsonb()" in script and "Address" not in script
        command.upgrade(cfg, "head")
        command.check(cfg)
        with admin.connect() as conn:
            kind = conn.execute(text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_schema = :s AND table_name = 'ty_cli_orders' AND column_name = 'doc'"),
                {"s": schema}).scalar()
        assert kind == "jsonb"
        cfg.attributes["target_metadata"] = metadata(extra=True)
        command.revision(cfg, message="prefs", autogenerate=True)
        command.upgrade(cfg, "head")
        command.check(cfg)
        command.downgrade(cfg, "base")
        with admin.connect() as conn:
            left = conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema}).scalars().all()
        assert left == ["alembic_version"]
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
