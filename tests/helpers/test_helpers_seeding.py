"""Factories (sequences, related objects, seeded randomness, get-or-create) and the
`sa-patterns seed` command: deterministic per seed, idempotent on re-run, nothing on failure."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL, Engine, text
from sqlalchemy.orm import Session

from sa_patterns.cli import main as cli_main
from sa_patterns.errors import ConfigurationError
from sa_patterns.testing.factories import Factories, Factory, seq

sys.path.insert(0, str(Path(__file__).parent / "seedapp"))
import helpers_seed_app as app


@pytest.fixture(scope="module", autouse=True)
def tables(engine: Engine) -> Iterator[None]:
    app.Base.metadata.create_all(engine)
    yield
    app.Base.metadata.drop_all(engine)


def snapshot(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT m.email, m.name, m.karma, n.slug, n.body FROM sd_notes n "
            "JOIN sd_members m ON m.id = n.member_id ORDER BY n.slug"))]


@pytest.fixture
def clean(engine: Engine) -> Iterator[None]:
    def wipe() -> None:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE sd_notes, sd_members RESTART IDENTITY CASCADE"))
    wipe()
    yield
    wipe()


def url_with_schema(pg_url: URL, schema: str) -> str:
    return pg_url.update_query_dict({"options": f"-csearch_path={schema},public"}).render_as_string(
        hide_password=False)


def run_seed(pg_url: URL, db_schema: str, seed: int, capsys: pytest.CaptureFixture[str]) -> str:
    code = cli_main(["seed", "helpers_seed_app:main", "--seed", str(seed),
                     "--url", url_with_schema(pg_url, db_schema)])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_seed_is_deterministic_and_idempotent(engine: Engine, pg_url: URL, db_schema: str,
                                              clean: None, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_seed(pg_url, db_schema, 42, capsys)
    assert "Member: 5 created, 0 already there" in out and "Note: 7 created" in out
    first = snapshot(engine)
    assert len(first) == 7
    out = run_seed(pg_url, db_schema, 42, capsys)  # re-run: finds everything
    assert "Member: 0 created, 5 already there" in out and "Note: 0 created, 7 already there" in out
    assert snapshot(engine) == first
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE sd_notes, sd_members RESTART IDENTITY CASCADE"))
    run_seed(pg_url, db_schema, 42, capsys)
    assert snapshot(engine) == first  # same seed, same rows, from scratch
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE sd_notes, sd_members RESTART IDENTITY CASCADE"))
    run_seed(pg_url, db_schema, 7, capsys)
    other = snapshot(engine)
    assert other != first and len(other) == 7


def test_failing_seed_writes_nothing(engine: Engine, pg_url: URL, db_schema: str, clean: None,
                                     monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(f: Factories) -> None:
        f.create(app.members)
        raise RuntimeError("seed bug")

    monkeypatch.setattr(app, "broken", broken, raising=False)
    with pytest.raises(RuntimeError, match="seed bug"):
        cli_main(["seed", "helpers_seed_app:broken", "--url", url_with_schema(pg_url, db_schema)])
    assert snapshot(engine) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM sd_members")).scalar() == 0


def test_cli_errors(capsys: pytest.CaptureFixture[str], pg_url: URL) -> None:
    url = pg_url.render_as_string(hide_password=False)
    assert cli_main(["seed", "nodots", "--url", url]) == 2
    assert "package.module:function" in capsys.readouterr().err
    assert cli_main(["seed", "no_such_module_x:main", "--url", url]) == 2
    assert cli_main(["seed", "helpers_seed_app:nothing", "--url", url]) == 2
    assert "no function 'nothing'" in capsys.readouterr().err


def test_factories_fixture_sequences_and_relationships(factories: Factories, session: Session, sql: Any) -> None:
    note = factories.create(app.notes)
    assert note.member.email == "member1@example.com"
    batch = factories.create_batch(app.members, 3)
    assert [m.email for m in batch] == [f"member{n}@example.com" for n in (2, 3, 4)]
    built = factories.build(app.members, name="Override")
    assert built.name == "Override" and built not in session
    session.flush()
    assert sql("SELECT count(*) FROM sd_members")[0][0] == 4
    assert sql("SELECT body FROM sd_notes")[0].body.endswith("wrote note 1")


@pytest.mark.sa_patterns_seed(42)
def test_factories_seed_marker(factories: Factories) -> None:
    assert factories.seed == 42


def test_same_seed_same_values_across_sessions(session: Session) -> None:
    a = Factories(session, seed=3)
    b = Factories(session, seed=3)
    va = [a.build(app.members).karma for _ in range(5)]
    vb = [b.build(app.members).karma for _ in range(5)]
    assert va == vb
    assert va != [Factories(session, seed=4).build(app.members).karma for _ in range(5)]


def test_factory_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unique_by must name attributes"):
        Factory(app.Member, unique_by=("nickname",), email=seq("x{n}"))


async def test_async_factories(async_factories: Any) -> None:
    note = await async_factories.create(app.notes)
    assert note.member.email == "member1@example.com"
    more = await async_factories.create_batch(app.members, 2)
    assert [m.email for m in more] == ["member2@example.com", "member3@example.com"]
    again = await async_factories.create(app.members, email="member2@example.com")
    assert again is more[0]  # get-or-create by unique_by
    await async_factories.session.flush()
    count = (await async_factories.session.execute(text("SELECT count(*) FROM sd_members"))).scalar()
    assert count == 3
