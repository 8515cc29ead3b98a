"""``__distribute_by__``: declarative Citus distribution, co-location per column, key rules.
Citus is not installable here: these tests check the generated SQL and its order."""

from __future__ import annotations

import pytest
from sqlalchemy import ForeignKeyConstraint, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sa_patterns.citus import Distributed, citus_statements
from sa_patterns.errors import ConfigurationError


class Base(DeclarativeBase):
    pass


class Country(Distributed, Base):
    __tablename__ = "ct_countries"
    __distribute_by__ = "reference"
    code: Mapped[str] = mapped_column(String(2), primary_key=True)


class Account(Distributed, Base):
    __tablename__ = "ct_accounts"
    __distribute_by__ = "org_id"
    org_id: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[int] = mapped_column(primary_key=True)


class Invoice(Distributed, Base):
    __tablename__ = "ct_invoices"
    __distribute_by__ = "org_id"
    __table_args__ = (ForeignKeyConstraint(["org_id", "account_id"], ["ct_accounts.org_id", "ct_accounts.id"]),)
    org_id: Mapped[int] = mapped_column(primary_key=True)
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int]


class Event(Distributed, Base):
    __tablename__ = "ct_events"
    __distribute_by__ = "device_id"
    device_id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[int] = mapped_column(primary_key=True)


def test_reference_first_then_distributed_colocated_per_column() -> None:
    assert citus_statements(Base.metadata.sorted_tables) == [
        "SELECT create_reference_table('ct_countries')",
        "SELECT create_distributed_table('ct_accounts', 'org_id')",
        "SELECT create_distributed_table('ct_events', 'device_id')",
        "SELECT create_distributed_table('ct_invoices', 'org_id', colocate_with => 'ct_accounts')",
    ]


def test_keys_must_include_the_distribution_column() -> None:
    class Other(DeclarativeBase):
        pass

    with pytest.raises(ConfigurationError, match="must include the distribution column 'org_id'"):

        class Bad(Distributed, Other):
            __tablename__ = "ct_bad"
            __distribute_by__ = "org_id"
            id: Mapped[int] = mapped_column(primary_key=True)
            org_id: Mapped[int]

    with pytest.raises(ConfigurationError, match="not a column"):

        class Missing(Distributed, Other):
            __tablename__ = "ct_missing"
            __distribute_by__ = "nope"
            id: Mapped[int] = mapped_column(primary_key=True)
