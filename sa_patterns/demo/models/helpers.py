"""Everyday helpers: customers with a typed JSON preferences document, and their orders."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ...typed_json import TypedJSON
from .base import Base


@dataclasses.dataclass
class CustomerPrefs:
    """The document stored in ``helper_customers.prefs`` (jsonb)."""

    newsletter: bool = False
    language: str = "en"
    tags: list[str] = dataclasses.field(default_factory=list)


class HelperCustomer(Base):
    __tablename__ = "helper_customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    prefs: Mapped[CustomerPrefs | None] = mapped_column(TypedJSON(CustomerPrefs))
    orders: Mapped[list[HelperOrder]] = relationship(back_populates="customer")


class HelperOrder(Base):
    __tablename__ = "helper_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("helper_customers.id"))
    total_cents: Mapped[int]
    created_at: Mapped[dt.datetime]
    customer: Mapped[HelperCustomer] = relationship(back_populates="orders")

    # Serves keyset pagination by (created_at DESC, id DESC) as a backward index scan.
    __table_args__ = (Index("helper_orders_created_id", "created_at", "id"),)
