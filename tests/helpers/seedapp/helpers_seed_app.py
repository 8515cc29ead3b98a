"""A user project's models and seed function, used by the seeding tests through the CLI."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sa_patterns.testing.factories import Factories, Factory, seq

NAMES = ["Ada", "Grace", "Edsger", "Barbara", "Donald", "Frances"]


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "sd_members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(40))
    karma: Mapped[int]


class Note(Base):
    __tablename__ = "sd_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("sd_members.id"))
    member: Mapped[Member] = relationship()
    body: Mapped[str]


members = Factory(
    Member,
    unique_by=("email",),
    email=seq("member{n}@example.com"),
    name=lambda c: c.random.choice(NAMES),
    karma=lambda c: c.random.randint(0, 1000),
)
notes = Factory(
    Note,
    unique_by=("slug",),
    member=members,
    slug=lambda c: f"note-{c.n}-{c.random.randint(0, 10**6)}",
    body=lambda c: f"{c.values['member'].name} wrote note {c.n}",
)


def main(f: Factories) -> None:
    author = f.create(members)
    f.create_batch(notes, 3, member=author)
    f.create_batch(notes, 4)  # each with its own new member
