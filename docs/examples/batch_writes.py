"""insert_many: INSERT … ON CONFLICT … RETURNING in chunks; bad rows refused up front."""

from sqlalchemy import URL, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sa_patterns import InvalidData, insert_many


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    price_cents: Mapped[int] = mapped_column(default=0)


def main(url: URL) -> None:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    Session = sessionmaker(engine)
    with Session.begin() as session:
        created = insert_many(session, Product, [
            {"sku": f"SKU-{i}", "name": f"Product {i}", "price_cents": i * 100} for i in range(10_000)
        ])
        assert len(created) == 10_000 and created[0].id is not None

        # A price feed: new SKUs are inserted, known ones updated, in one statement per chunk.
        feed = [{"sku": "SKU-1", "name": "Product 1", "price_cents": 999},
                {"sku": "SKU-NEW", "name": "Brand new", "price_cents": 5}]
        upserted = insert_many(session, Product, feed, on_conflict="update", conflict=["sku"],
                               update=["price_cents"])
        assert [(p.sku, p.price_cents) for p in upserted] == [("SKU-1", 999), ("SKU-NEW", 5)]

        # Duplicates skipped: only new rows come back.
        again = insert_many(session, Product, feed, on_conflict="ignore")
        assert again == []

        try:
            insert_many(session, Product, [{"sku": "A", "name": "ok"}, {"sku": "B"}])
        except InvalidData as exc:
            print(exc)  # ... row 1 is missing required key 'name' ... Nothing was written.
        assert session.scalar(select(func.count()).select_from(Product)) == 10_001
    engine.dispose()
