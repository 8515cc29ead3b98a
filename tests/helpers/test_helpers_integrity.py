"""Constraint failures become ConflictError / ForeignKeyViolation / IntegrityViolation by
SQLSTATE, with the constraint's columns read from the catalog; get_or_404 raises NotFound."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import (
    CheckConstraint,
    Engine,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from sa_patterns import (
    ConflictError,
    ForeignKeyViolation,
    IntegrityViolation,
    NotFound,
    get_or_404,
    get_or_404_async,
    one_or_404,
    one_or_404_async,
    translate,
)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "ig_accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100), unique=True)
    org: Mapped[str] = mapped_column(String(20))
    handle: Mapped[str] = mapped_column(String(20))
    age: Mapped[int | None] = mapped_column(CheckConstraint("age >= 0", name="ig_age_positive"))
    __table_args__ = (
        UniqueConstraint("org", "handle", name="ig_accounts_org_handle"),
        Index("ig_accounts_lower_handle", text("lower(handle)"), unique=True),
        # a column beside an expression: no column list, or a form would blame the wrong field
        Index("ig_accounts_org_lower_email", "org", text("lower(email)"), unique=True),
        # INCLUDE columns are carried, not part of the key
        Index("ig_accounts_org_age", "org", "age", unique=True, postgresql_include=["handle"]),
    )


class Post(Base):
    __tablename__ = "ig_posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ig_accounts.id", name="ig_posts_account_fk"))


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    Base.metadata.create_all(engine)
    yield
    Base.metadata.drop_all(engine)


@pytest.fixture
def alice(session: Session) -> Account:
    a = Account(id=1, email="alice@example.com", org="acme", handle="alice")
    session.add(a)
    session.flush()
    return a


def test_unique_single_column(session: Session, alice: Account) -> None:
    with pytest.raises(ConflictError) as info, translate(session), session.begin_nested():
        session.add(Account(id=2, email="alice@example.com", org="acme", handle="other"))
    err = info.value
    assert err.constraint == "ig_accounts_email_key"
    assert err.columns == ("email",)
    assert err.table == "ig_accounts" and err.sqlstate == "23505"
    assert err.values is None  # values are opt-in
    assert "ig_accounts_email_key" in str(err) and "(email)" in str(err) and "[sap07]" in str(err)
    assert isinstance(err.__cause__, Exception)


def test_unique_multi_column_in_constraint_order(session: Session, alice: Account) -> None:
    stmt = Account.__table__.insert().values(id=3, email="x@example.com", org="acme", handle="alice")
    with (
        pytest.raises(ConflictError) as info,
        translate(session, include_values=True),
        session.begin_nested(),
    ):
        session.execute(stmt)
    assert info.value.constraint == "ig_accounts_org_handle"
    assert info.value.columns == ("org", "handle")
    assert info.value.values == {"org": "acme", "handle": "alice"}


def test_unique_expression_index(session: Session, alice: Account) -> None:
    with pytest.raises(ConflictError) as info, translate(session), session.begin_nested():
        session.add(Account(id=4, email="y@example.com", org="other", handle="ALICE"))
    assert info.value.constraint == "ig_accounts_lower_handle"
    assert info.value.columns == ()  # an expression has no column; never guessed from text


def test_unique_index_of_a_column_and_an_expression_names_no_column(session: Session, alice: Account) -> None:
    with pytest.raises(ConflictError) as info, translate(session), session.begin_nested():
        session.add(Account(id=5, email="ALICE@example.com", org="acme", handle="bob"))
    assert info.value.constraint == "ig_accounts_org_lower_email"
    assert info.value.columns == ()  # not ("org",): the key is (org, lower(email))


def test_unique_index_key_columns_leave_out_include_columns(session: Session, alice: Account) -> None:
    session.add(Account(id=8, email="c@example.com", org="acme", handle="carol", age=30))
    session.flush()
    with pytest.raises(ConflictError) as info, translate(session), session.begin_nested():
        session.add(Account(id=9, email="d@example.com", org="acme", handle="dave", age=30))
    assert info.value.constraint == "ig_accounts_org_age"
    assert info.value.columns == ("org", "age")


def test_foreign_key(session: Session) -> None:
    with pytest.raises(ForeignKeyViolation) as info, translate(session), session.begin_nested():
        session.add(Post(id=1, account_id=999))
    assert info.value.constraint == "ig_posts_account_fk"
    assert info.value.columns == ("account_id",)
    assert info.value.sqlstate == "23503"


def test_foreign_key_still_referenced(session: Session, alice: Account) -> None:
    session.add(Post(id=2, account_id=1))
    session.flush()
    with pytest.raises(ForeignKeyViolation) as info, translate(session), session.begin_nested():
        session.execute(text("DELETE FROM ig_accounts WHERE id = 1"))
    assert info.value.table == "ig_posts"


def test_not_null_and_check(session: Session) -> None:
    with pytest.raises(IntegrityViolation) as info, translate(), session.begin_nested():
        session.execute(text("INSERT INTO ig_accounts (id, email, org) VALUES (5, 'z@x', 'o')"))
    assert type(info.value) is IntegrityViolation
    assert info.value.sqlstate == "23502" and info.value.columns == ("handle",)
    assert "ig_accounts.handle may not be NULL" in str(info.value)
    with pytest.raises(IntegrityViolation) as info, translate(session), session.begin_nested():
        session.add(Account(id=6, email="q@x", org="o", handle="q", age=-1))
    assert info.value.sqlstate == "23514" and info.value.constraint == "ig_age_positive"
    assert info.value.columns == ("age",)


def test_other_errors_pass_through(session: Session) -> None:
    from sqlalchemy.exc import ProgrammingError

    with pytest.raises(ProgrammingError), translate(session), session.begin_nested():
        session.execute(text("SELECT * FROM no_such_table"))
    with pytest.raises(ZeroDivisionError), translate(session):
        1 / 0  # noqa: B018


def test_decorator_sync(session: Session, alice: Account) -> None:
    @translate(session)
    def register(email: str) -> None:
        with session.begin_nested():
            session.add(Account(id=7, email=email, org="b", handle="b"))

    with pytest.raises(ConflictError):
        register("alice@example.com")
    register("fresh@example.com")
    assert session.scalar(select(Account.email).where(Account.id == 7)) == "fresh@example.com"


async def test_async_context_manager_and_decorator(async_session: AsyncSession) -> None:
    async_session.add(Account(id=10, email="a@async", org="o", handle="h"))
    await async_session.flush()
    with pytest.raises(ConflictError) as info:
        async with translate(async_session), async_session.begin_nested():
            async_session.add(Account(id=11, email="a@async", org="p", handle="i"))
    assert info.value.columns == ("email",)

    @translate(async_session)
    async def add_post() -> None:
        async with async_session.begin_nested():
            async_session.add(Post(id=12, account_id=12345))

    with pytest.raises(ForeignKeyViolation) as fk:
        await add_post()
    assert fk.value.columns == ("account_id",)


def test_get_or_404(session: Session, alice: Account) -> None:
    assert get_or_404(session, Account, 1) is alice
    with pytest.raises(NotFound, match=r"Account with primary key 404 not found.*\[sap09\]"):
        get_or_404(session, Account, 404)
    assert one_or_404(session, select(Account).where(Account.email == "alice@example.com")) is alice
    with pytest.raises(NotFound, match="Account"):
        one_or_404(session, select(Account).where(Account.email == "nobody"))


async def test_get_or_404_async(async_session: AsyncSession) -> None:
    async_session.add(Account(id=20, email="b@async", org="o", handle="h"))
    await async_session.flush()
    assert (await get_or_404_async(async_session, Account, 20)).email == "b@async"
    with pytest.raises(NotFound):
        await get_or_404_async(async_session, Account, 21)
    with pytest.raises(NotFound):
        await one_or_404_async(async_session, select(Account).where(Account.id == 21))
