"""Factories and a reproducible, idempotent seed (what `sa-patterns seed app.seeds:main` runs)."""

from sqlalchemy import URL, ForeignKey, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from sa_patterns.testing.factories import Factories, Factory, seq


class Base(DeclarativeBase):
    pass


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


class Player(Base):
    __tablename__ = "players"
    id: Mapped[int] = mapped_column(primary_key=True)
    handle: Mapped[str] = mapped_column(String(50), unique=True)
    rating: Mapped[int]
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    team: Mapped[Team] = relationship()


teams = Factory(Team, unique_by=("name",), name=seq("Team {n}"))
players = Factory(
    Player,
    unique_by=("handle",),
    handle=seq("player{n}"),
    rating=lambda c: c.random.randint(800, 2400),  # seeded: the same on every run
    team=teams,  # a related object, made by its own factory
)


def seed(f: Factories) -> None:
    """What app/seeds.py:main would contain."""
    red = f.create(teams, name="Red")
    f.create_batch(players, 5, team=red)
    f.create_batch(players, 3)  # each with a new team


def run(engine_url: URL, seed_value: int) -> list[tuple[str, int, str]]:
    engine = create_engine(engine_url)
    with sessionmaker(engine).begin() as session:
        seed(Factories(session, seed=seed_value))
    with sessionmaker(engine)() as session:
        rows = session.execute(select(Player.handle, Player.rating, Team.name).join(Player.team)
                               .order_by(Player.handle)).all()
    engine.dispose()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def main(url: URL) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    first = run(url, 42)
    again = run(url, 42)  # idempotent: found, not duplicated
    assert again == first and len(first) == 8
    with sessionmaker(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Player)) == 8
        assert session.scalar(select(func.count()).select_from(Team)) == 4
    engine.dispose()
