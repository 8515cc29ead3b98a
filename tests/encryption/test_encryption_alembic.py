"""Autogenerate round trip of encrypted columns: the migration names the types through
``sa_patterns``, holds no key, imports and compiles, and needs no key to run. The CLI runs as
the owner role (not a superuser), as a deployment runs its migrations."""

from __future__ import annotations

import argparse
import base64
import os
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Column, Integer, MetaData, Table, create_engine, text

import sa_patterns
from sa_patterns import EncryptedJSON, EncryptedString, EncryptedValue, Keyring
from sa_patterns.cli.init import init
from sa_patterns.testing.logins import RunRoles

KEYS = {"k1": os.urandom(32), "k2": os.urandom(32)}
INDEX = {"i1": os.urandom(32)}
RING = Keyring(KEYS, active="k2", index_keys=INDEX)


def build(variant: int) -> MetaData:
    md = MetaData()
    cols = [
        Column("id", Integer, primary_key=True),
        Column("email", EncryptedString(RING, blind_index=True, normalize="lower")),
        Column("salary", EncryptedValue("decimal", RING)),
        Column("profile", EncryptedJSON(lambda: RING)),
    ]
    if variant:
        cols.append(Column("phone", EncryptedString(RING, blind_index=True)))
    Table("enc_alembic_person", md, *cols)
    return md


def forbidden_strings() -> list[str]:
    out = ["Keyring", "lambda"]
    for key in (*KEYS.values(), *INDEX.values()):
        out += [base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode(), key.hex(), repr(key)[2:-1]]
    return out


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> MetaData:
    return MetaData()  # the role model, nothing built: the migrations build


def test_autogenerate_round_trip(
    tmp_path: Path, pg_url: URL, db_schema: str, db_roles: RunRoles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SA_PATTERNS_KEYS", raising=False)  # migrations must not need a key
    schema = f"{db_schema}_alembic"
    owner = db_roles.url(pg_url, db_roles.owner)
    admin = create_engine(owner)  # the owner makes the schema, migrates it and drops it
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    ini = init(tmp_path / "migrations", metadata="unused:unused")
    cfg = Config(str(ini))
    cfg.attributes["configure_logger"] = False
    url = owner.update_query_dict({"options": f"-csearch_path={schema}"})
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    versions = tmp_path / "migrations" / "versions"
    try:
        cfg.attributes["target_metadata"] = build(0)
        command.revision(cfg, message="encrypted", autogenerate=True)
        script = next(versions.glob("*.py")).read_text()
        assert "import sa_patterns" in script
        assert "sa_patterns.EncryptedString()" in script
        assert "sa_patterns.EncryptedValue('decimal')" in script
        assert "sa_patterns.EncryptedJSON()" in script
        assert "sa.Column('email_bidx', sa.LargeBinary()" in script
        assert "ix_enc_alembic_person_email_bidx" in script
        for secret in forbidden_strings():
            assert secret not in script, f"key material or keyring in the migration: {secret!r}"
        compile(script, "migration", "exec")
        namespace: dict[str, object] = {}
        exec(compile(script, "migration", "exec"), namespace)  # its imports resolve
        assert callable(namespace["upgrade"])

        command.upgrade(cfg, "head")
        with admin.connect() as conn:
            cols = dict(conn.execute(text(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = :s AND table_name = 'enc_alembic_person'"), {"s": schema}).all())
            assert cols == {"id": "integer", "email": "bytea", "email_bidx": "bytea",
                            "salary": "bytea", "profile": "bytea"}
            assert conn.execute(text(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = :s AND indexname = "
                "'ix_enc_alembic_person_email_bidx'"), {"s": schema}).scalar_one() == 1
        command.check(cfg)  # no false diff: bytea vs our TypeDecorators compare equal

        cfg.cmd_opts = argparse.Namespace(autogenerate=True)
        command.revision(cfg, message="noop", autogenerate=True)
        cfg.cmd_opts = None
        assert len(list(versions.glob("*.py"))) == 1

        cfg.attributes["target_metadata"] = build(1)  # a new encrypted, blind-indexed column
        command.revision(cfg, message="phone", autogenerate=True)
        second = max(versions.glob("*.py"), key=lambda p: p.stat().st_mtime).read_text()
        assert "op.add_column('enc_alembic_person', sa.Column('phone', sa_patterns.EncryptedString()" in second
        assert "phone_bidx" in second and "ix_enc_alembic_person_phone_bidx" in second
        command.upgrade(cfg, "head")
        command.check(cfg)

        command.downgrade(cfg, "base")
        with admin.connect() as conn:
            left = conn.execute(text(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE nspname = :s AND relname NOT LIKE 'alembic_version%'"), {"s": schema}).all()
        assert left == []
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def test_repr_is_the_constructor_call_without_keys() -> None:
    md = build(1)
    types = {c.name: c.type for c in md.tables["enc_alembic_person"].columns}
    assert repr(types["email"]) == "EncryptedString()"
    assert repr(types["salary"]) == "EncryptedValue('decimal')"
    assert repr(types["profile"]) == "EncryptedJSON()"
    assert type(types["email"]).__module__ == "sa_patterns"
    assert eval(f"sa_patterns.{types['salary']!r}", {"sa_patterns": sa_patterns}).serializer == "decimal"
