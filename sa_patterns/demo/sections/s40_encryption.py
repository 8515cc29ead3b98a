"""Encrypted columns: ciphertext in the table, plaintext in the app, lookups by blind index,
refusals that name the column, and a key rotation with no downtime."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, text

from ...encryption import check_keys
from ...encryption.rotation import rotate_keys
from ...errors import ConfigurationError, DecryptionError
from ..models.encryption import EncCustomer, demo_keyring, use_keyring
from ..runner import DemoContext

TITLE = "Encrypted columns: AES-256-GCM bound to table.column, blind index, key rotation"

CUSTOMERS = [
    ("Alice", "Alice@Example.com", "FR-1234-5678", {"tier": "gold", "tags": ["vip"]}, dt.date(1990, 5, 17)),
    ("Bob", "bob@example.com", "DE-8765-4321", {"tier": "basic"}, dt.date(1985, 1, 2)),
    ("Carol", "carol@example.org", None, None, None),
]


def _key_ids(ctx: DemoContext) -> list[str]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT DISTINCT convert_from(substring(email from 3 for get_byte(email, 1)), 'UTF8') "
            "FROM enc_customers ORDER BY 1")).scalars())


def run(ctx: DemoContext) -> None:
    use_keyring(demo_keyring("demo-k1", index=()))  # no index key: the blind index cannot work
    try:
        check_keys(EncCustomer)
    except ConfigurationError as exc:
        ctx.show("check_keys at start-up, index keys missing", str(exc).splitlines()[-1].strip())
        ctx.check(True, "a keyring misconfiguration fails at start-up, naming the column")
    else:
        ctx.check(False, "a keyring misconfiguration fails at start-up, naming the column")
    use_keyring(demo_keyring("demo-k1"))  # DEMO ONLY keys, derived from a public seed
    check_keys(EncCustomer)
    with ctx.Session.begin() as s:
        s.add_all([
            EncCustomer(name=n, email=e, tax_id=t, profile=p, birthday=b) for n, e, t, p, b in CUSTOMERS
        ])
    with ctx.engine.connect() as conn:
        email, bidx, tax = conn.execute(text(
            "SELECT email, email_bidx, tax_id FROM enc_customers WHERE name = 'Alice'")).one()
    ctx.show("what PostgreSQL stores for Alice's email (bytea)", bytes(email)[:24].hex() + "…")
    ctx.show("envelope header", f"version {email[0]}, key id {bytes(email[2:2 + email[1]]).decode()!r}")
    ctx.show("blind index column email_bidx", bytes(bidx)[:20].hex() + "…")
    ctx.check(b"Alice" not in bytes(email) and b"FR-1234" not in bytes(tax), "no plaintext in the table")

    with ctx.Session() as s:
        alice = s.scalars(select(EncCustomer).where(EncCustomer.name == "Alice")).one()
        ctx.show("what the application reads", (alice.email, alice.tax_id, alice.profile, alice.birthday))
        ctx.check(alice.profile == {"tier": "gold", "tags": ["vip"]} and alice.birthday == dt.date(1990, 5, 17),
                  "JSON and dates round-trip with their Python types")
        query = select(EncCustomer.name).where(EncCustomer.email == "  ALICE@example.COM")
        ctx.show("EncCustomer.email == '  ALICE@example.COM' compiles to", str(query.compile(ctx.engine)).split("WHERE ")[1])
        ctx.check(s.scalars(query).all() == ["Alice"], "equality search through the HMAC blind index (normalised)")

    # A DBA copies Bob's tax id over Alice's: the value is bound to its column and is refused.
    with ctx.engine.connect() as conn:
        conn.execute(text(
            "UPDATE enc_customers SET email = (SELECT tax_id FROM enc_customers WHERE name = 'Bob') "
            "WHERE name = 'Alice'"))
        try:
            conn.execute(select(EncCustomer.email).where(EncCustomer.name == "Alice")).scalar_one()
            refused = ""
        except DecryptionError as exc:
            refused = str(exc)
        conn.rollback()
    ctx.show("after copying a ciphertext into another column", refused.split(". ")[0])
    ctx.check(refused.startswith("enc_customers.email"), "DecryptionError names table and column, no garbage")

    # Rotation: deploy a new active key (old one still readable), re-encrypt, retire the old key.
    use_keyring(demo_keyring("demo-k2", "demo-k1", index=("demo-idx-2", "demo-idx-1")))
    report = rotate_keys(ctx.engine, EncCustomer, batch_size=2)
    ctx.show("sa-patterns rotate-keys (Python API)",
             f"{report.rows} rows, {report.batches} batches, {report.reencrypted} values re-encrypted, "
             f"{report.reindexed} blind indexes rebuilt, {report.remaining} remaining")
    ctx.check(_key_ids(ctx) == ["demo-k2"] and report.remaining == 0, "every value now names the new key")
    use_keyring(demo_keyring("demo-k2", index=("demo-idx-2",)))  # old keys retired
    with ctx.Session() as s:
        found = s.scalars(select(EncCustomer.name).where(EncCustomer.email == "bob@example.com")).all()
        ctx.check(found == ["Bob"] and len(s.scalars(select(EncCustomer)).all()) == 3,
                  "after retiring the old keys every row decrypts and the blind index still finds Bob")
