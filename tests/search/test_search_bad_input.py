"""Any user text is safe: results or none, never an exception; bad settings fail at class
definition with ConfigurationError."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, Integer, String, select
from sqlalchemy.dialects.postgresql import REGCONFIG
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_patterns
from sa_patterns import ConfigurationError
from sa_patterns.search import Searchable, headline, rank


class Base(DeclarativeBase):
    pass


class Doc(Searchable, Base):
    __tablename__ = "search_bad_docs"
    __searchable__ = {"title": "A", "body": "C"}
    __search_trigram__ = ("title",)
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str]


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        sa_patterns.create_all(conn, Base.metadata)
        conn.execute(
            Doc.__table__.insert(),
            [
                {"title": "Quotes \"and\" 'apostrophes'", "body": "a & b | !c (d) :* <-> \\ back"},
                {"title": "Emoji 🐘 elephant", "body": "the and of"},
                {"title": "Plain words", "body": "nothing special here"},
            ],
        )
    yield


NASTY = [
    "",
    " ",
    '"unbalanced',
    "'",
    "''",
    "&|!():*<->",
    "a & | b",
    "!!!",
    "foo:*",
    "\\",
    "back\\slash\\",
    "🐘",
    "the and of",  # only stop-words
    "x" * 100_000,
    "word " * 20_000,
    "\x00nul",
    "\ud800 lone surrogate",
    "(((((((",
    "<-> <2> <->",
    "-",
    "or or or",
    "a" * 3000,
]


def _run_all(session: Session, text: str) -> None:
    for prefix in (False, True):
        session.scalars(Doc.search(text, prefix=prefix)).all()
        session.execute(
            select(rank(Doc, text, prefix=prefix), headline(Doc.body, text, prefix=prefix)).where(
                Doc.search_match(text, prefix=prefix)
            )
        ).all()
    session.scalars(Doc.search(text, fuzzy=True)).all()


@pytest.mark.parametrize("text", NASTY, ids=range(len(NASTY)))
def test_nasty_inputs_never_raise(session: Session, text: str) -> None:
    _run_all(session, text)


def test_special_characters_still_find_words(session: Session) -> None:
    assert [d.title for d in session.scalars(Doc.search('"elephant'))] == ["Emoji 🐘 elephant"]
    assert [d.title for d in session.scalars(Doc.search("apostroph:* &", prefix=True))] == [
        "Quotes \"and\" 'apostrophes'"
    ]
    assert session.scalars(Doc.search("the and of")).all() == []  # stop-words: no results


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300) | st.text(alphabet="&|!():*<->\"'\\ -ab", max_size=60))
def test_arbitrary_text_never_raises(connection: Connection, text: str) -> None:
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        _run_all(session, text)


# -- configuration errors, at class definition -----------------------------------------------


def _define(**attrs: object) -> type:
    class Fresh(DeclarativeBase):
        pass

    namespace: dict[str, object] = {
        "__tablename__": "fresh",
        "__annotations__": {"id": Mapped[int], "title": Mapped[str]},
        "id": mapped_column(Integer, primary_key=True),
        "title": mapped_column(String),
        **attrs,
    }
    return type("Fresh", (Searchable, Fresh), namespace)


def test_valid_definition_and_custom_config_opt_out() -> None:
    assert _define(__searchable__={"title": "A"}).__table__.c.search_vector is not None  # type: ignore[attr-defined]
    custom = _define(__searchable__=["title"], __search_config__="public.my_cfg", __search_custom_config__=True)
    assert "'public.my_cfg'::regconfig" in str(custom.__table__.c.search_vector.server_default.sqltext)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"__searchable__": {"title": "A"}, "__search_config__": "klingon"}, "unknown text search configuration 'klingon'"),
        ({"__searchable__": {"title": "A"}, "__search_config__": "english'; DROP TABLE x; --"}, "is not a text search configuration name"),
        ({"__searchable__": {"title": "E"}}, "a weight is one of"),
        ({"__searchable__": {}}, "declares no columns"),
        ({"__searchable__": {"nope": "A"}}, "search column 'nope' is not an attribute"),
        ({"__searchable__": {"id": "A"}}, "full-text search reads text columns"),
        ({"__searchable__": {"title": "A"}, "__search_config_column__": "title"}, "must be a REGCONFIG column"),
        ({"__searchable__": {"title": "A"}, "__search_trigram__": ("missing",)}, "search column 'missing'"),
        ({"__searchable__": {"title": "A"}, "search_vector": mapped_column(String)}, "declares 'search_vector' itself"),
    ],
)
def test_bad_configuration_fails_at_class_definition(attrs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        _define(**attrs)


def test_bad_query_config_and_fuzzy_without_trigram() -> None:
    with pytest.raises(ConfigurationError, match="unknown text search configuration"):
        Doc.search("x", config="klingon")
    plain = _define(__searchable__=["title"])
    with pytest.raises(ConfigurationError, match="__search_trigram__"):
        plain.search("x", fuzzy=True)  # type: ignore[attr-defined]


def test_config_column_accepts_regconfig() -> None:
    model = _define(
        __searchable__=["title"],
        __search_config_column__="lang",
        lang=mapped_column(REGCONFIG, nullable=True),
    )
    assert 'COALESCE(lang, ' in str(model.__table__.c.search_vector.server_default.sqltext)  # type: ignore[attr-defined]


def test_other_mapping_styles_get_the_vector_too() -> None:
    from sqlalchemy.orm import declarative_base, registry

    reg = registry()

    @reg.mapped
    class Decorated(Searchable):
        __tablename__ = "decorated"
        __searchable__ = ["title"]
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(20))

    Legacy = declarative_base()

    class Classic(Searchable, Legacy):  # type: ignore[misc,valid-type]
        __tablename__ = "classic"
        __searchable__ = ["title"]
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(20))

    for model in (Decorated, Classic):
        assert "search_vector" in model.__table__.c  # type: ignore[attr-defined]
        assert "search_vector @@ websearch_to_tsquery" in str(model.search("x"))
