"""Constraint failures as ConflictError / ForeignKeyViolation, found by SQLSTATE; get_or_404."""

from sqlalchemy import URL, ForeignKey, String, UniqueConstraint, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from sa_patterns import ConflictError, ForeignKeyViolation, NotFound, get_or_404, translate


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    org: Mapped[str] = mapped_column(String(20))
    email: Mapped[str] = mapped_column(String(100))
    __table_args__ = (UniqueConstraint("org", "email", name="users_org_email_key"),)


class Invoice(Base):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


def register(session: Session, org: str, email: str) -> User:
    # translate(session): the session is only used to look the constraint's columns up in the
    # catalog (on a fresh connection, since the failed transaction can run nothing more).
    with translate(session):
        user = User(org=org, email=email)
        session.add(user)
        session.flush()
        return user


def main(url: URL) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    Session = sessionmaker(engine)
    with Session() as session:
        alice = register(session, "acme", "alice@example.com")
        session.commit()
        try:
            register(session, "acme", "alice@example.com")
        except ConflictError as exc:  # e.g. answer HTTP 409
            session.rollback()
            assert exc.constraint == "users_org_email_key"
            assert exc.columns == ("org", "email")  # in constraint order, from pg_constraint
            print("409:", exc)
        else:
            raise AssertionError("duplicate accepted")

        try:
            with translate(session):
                session.add(Invoice(user_id=999))
                session.flush()
        except ForeignKeyViolation as exc:
            session.rollback()
            assert exc.columns == ("user_id",) and exc.sqlstate == "23503"
        else:
            raise AssertionError("dangling foreign key accepted")

        assert get_or_404(session, User, alice.id).email == "alice@example.com"
        try:
            get_or_404(session, User, 12345)
        except NotFound as exc:  # e.g. answer HTTP 404
            print("404:", exc)
        else:
            raise AssertionError("missing row found")
    engine.dispose()
