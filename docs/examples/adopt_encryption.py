"""A populated plaintext column becomes EncryptedString with a blind index, in place: encrypted in
batches with the keyring, the plaintext column dropped at a brief swap; autogenerate then finds
the table exactly as the model declares it, and no plaintext is left in it."""

import os

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import URL, create_engine, insert, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import sa_patterns.alembic  # registers op.encrypt_column
from sa_patterns import EncryptedString, Keyring

# (in production: Keyring.from_env(), keys from a secret store; fresh random keys here)
KEYRING = Keyring({"k1": os.urandom(32)}, index_keys={"i1": os.urandom(32)})


class Before(DeclarativeBase):  # the table as production has it
    pass


class OldCustomer(Before):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]


class Base(DeclarativeBase):  # the model, now encrypted
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(EncryptedString(KEYRING, blind_index=True, normalize="lower"))


def main(url: URL) -> None:
    engine = create_engine(url, connect_args={"prepare_threshold": None})  # see "Readers" below
    Before.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(OldCustomer), [{"email": f"user{n}@example.com"} for n in range(5_000)])

    # The revision's upgrade() as autogenerate writes it for this model (with the keyring at a
    # module-level name it writes keyring="app.models:KEYRING"; the example passes the object):
    with engine.connect() as conn:
        op = Operations(MigrationContext.configure(conn))
        op.encrypt_column("customers", "email", blind_index="email_bidx", normalize=("lower",),
                          keyring=KEYRING, nullable=False, batch_size=1000)

    with engine.connect() as conn:
        # every value decrypts, and the blind index finds it
        assert conn.execute(select(Customer.email).where(Customer.id == 1)).scalar_one() == "user0@example.com"
        assert conn.execute(select(Customer.id).where(Customer.email == "USER42@example.com")).scalar_one() == 43
        # no plaintext left in any column of any row
        assert conn.execute(text(
            "SELECT count(*) FROM customers c WHERE strpos(c::text, '@example.com') > 0")).scalar_one() == 0
        context = MigrationContext.configure(conn, opts={
            **sa_patterns.alembic.configure_kwargs(), "target_metadata": Base.metadata})
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
