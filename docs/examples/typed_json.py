"""TypedJSON: a jsonb column holding a pydantic model or a dataclass, validated both ways."""

import dataclasses

import pydantic
from sqlalchemy import URL, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import sa_patterns
from sa_patterns import InvalidData, TypedJSON


class Settings(pydantic.BaseModel):
    theme: str = "light"
    page_size: int = pydantic.Field(default=20, ge=1, le=200)
    labels: list[str] = []


@dataclasses.dataclass
class Address:
    street: str
    city: str


class Base(DeclarativeBase):
    pass


class Profile(Base):
    __tablename__ = "profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    settings: Mapped[Settings] = mapped_column(TypedJSON(Settings))
    address: Mapped[Address | None] = mapped_column(TypedJSON(Address))


def main(url: URL) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    # install() enables in-place change tracking for TypedJSON columns.
    Session = sa_patterns.install(sessionmaker(engine))

    with Session.begin() as session:
        session.add(Profile(id=1, settings=Settings(labels=["new"]), address=Address("Main St 1", "Oslo")))

    with Session.begin() as session:
        profile = session.get(Profile, 1)
        assert profile is not None and isinstance(profile.settings, Settings)
        profile.settings.labels.append("vip")  # an in-place change, saved at commit
        profile.settings.theme = "dark"

    with engine.connect() as conn:
        doc = conn.execute(text("SELECT settings FROM profiles WHERE id = 1")).scalar()
    assert doc == {"theme": "dark", "page_size": 20, "labels": ["new", "vip"]}

    with Session() as session:  # query inside the document with jsonb operators
        found = session.scalars(select(Profile).where(Profile.settings["theme"].astext == "dark")).one()
        assert found.address == Address("Main St 1", "Oslo")

    with Session() as session:
        profile = session.get(Profile, 1)
        assert profile is not None
        profile.settings.page_size = 10_000  # invalid: le=200
        try:
            session.commit()
        except InvalidData as exc:
            print(exc)  # profiles.settings: invalid Settings: page_size: ...
            assert "profiles.settings" in str(exc)
        else:
            raise AssertionError("invalid document saved")
    engine.dispose()
