from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """The demo app's declarative base; every demo model module subclasses it."""
