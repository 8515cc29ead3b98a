"""Key rotation: the Python API and ``sa-patterns rotate-keys``, including a run killed half way.

Rotation runs as the plugin's app role (its engine, and its own login for the CLI), on tables
create_all built as the owner role; emptying them (TRUNCATE) is the owner's."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from encryption_rotation_app import Account, Base
from sqlalchemy import URL, Engine, MetaData, create_engine, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sa_patterns
from sa_patterns import EncryptedString, KeyNotFound, Keyring, Versioned
from sa_patterns.encryption import KeyContext
from sa_patterns.encryption.rotation import rotate_keys, rotate_keys_async
from sa_patterns.encryption.types import EncryptedType
from sa_patterns.testing.logins import RunRoles

HERE = Path(__file__).resolve().parent
KEY = {name: base64.b64encode(os.urandom(32)).decode() for name in ("k1", "k2", "i1", "i2")}
ROWS = 600


def keys(enc: str, index: str = "i1") -> dict[str, str]:
    return {
        "SA_PATTERNS_KEYS": ",".join(f"{k}:{KEY[k]}" for k in enc.split(",")),
        "SA_PATTERNS_KEYS_INDEX": ",".join(f"{k}:{KEY[k]}" for k in index.split(",")),
    }


def use(monkeypatch: pytest.MonkeyPatch, enc: str, index: str = "i1") -> None:
    """Point the app at a keyring, as a redeploy with new environment variables does."""
    for name, value in keys(enc, index).items():
        monkeypatch.setenv(name, value)
    for column in Account.__table__.columns:
        if isinstance(column.type, EncryptedType):
            column.type.reset_keyring()


def expected(i: int) -> tuple[str | None, Any]:
    return (None if i % 7 == 0 else f"User{i}@Example.com"), {"n": i, "tags": ["a", i % 3 == 0]}


# -- models built with the module's schema (besides the rotation app's Account) ----------------

TENANT_RINGS: dict[int, Keyring] = {}


def tenant_ring(ctx: KeyContext) -> Keyring:
    assert ctx.table == "enc_rot_vault" and ctx.column == "secret"
    return TENANT_RINGS[int(ctx.tenant)]  # type: ignore[arg-type]


class VaultBase(DeclarativeBase):
    pass


class Vault(VaultBase):
    __tablename__ = "enc_rot_vault"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant: Mapped[int]
    secret: Mapped[str] = mapped_column(EncryptedString(tenant_ring))


class HolderBase(DeclarativeBase):
    pass


class Holder(Versioned, HolderBase):
    __tablename__ = "enc_rot_holder"
    id: Mapped[int] = mapped_column(primary_key=True)
    secret: Mapped[str] = mapped_column(EncryptedString())


@pytest.fixture(scope="module")
def sa_patterns_metadata() -> list[MetaData]:
    return [Base.metadata, VaultBase.metadata, HolderBase.metadata]


def truncate(owner_engine: Engine, *tables: str) -> None:
    with owner_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(tables)}"))


@pytest.fixture
def seeded(engine: Engine, owner_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    use(monkeypatch, "k1")
    truncate(owner_engine, "enc_rot_account")
    with engine.begin() as conn:
        conn.execute(insert(Account), [
            {"id": i, "email": expected(i)[0], "doc": expected(i)[1]} for i in range(1, ROWS + 1)
        ])
    yield
    truncate(owner_engine, "enc_rot_account")


@pytest.fixture(scope="module")
def app_url(pg_url: URL, db_roles: RunRoles, db_schema: str) -> URL:
    """The app role's own login on the module's schema, for the CLI."""
    return db_roles.url(pg_url, db_roles.app).update_query_dict({"options": f"-csearch_path={db_schema}"})


def key_ids(engine: Engine) -> dict[str, int]:
    """How many stored values carry each key id, read from the raw envelopes."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT convert_from(substring(v from 3 for get_byte(v, 1)), 'SQL_ASCII') AS kid, count(*) "
            "FROM (SELECT email AS v FROM enc_rot_account UNION ALL SELECT doc FROM enc_rot_account) s "
            "WHERE v IS NOT NULL GROUP BY 1")).all()
    return {r[0]: r[1] for r in rows}


def index_ids(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT convert_from(substring(email_bidx from 1 for 2), 'SQL_ASCII'), count(*) "
            "FROM enc_rot_account WHERE email_bidx IS NOT NULL GROUP BY 1")).all()
    return {r[0]: r[1] for r in rows}


def assert_all_readable(engine: Engine) -> None:
    with Session(engine) as s:
        got = {a.id: (a.email, a.doc) for a in s.scalars(select(Account))}
    assert got == {i: expected(i) for i in range(1, ROWS + 1)}


VALUES = ROWS + ROWS - ROWS // 7  # doc on every row, email on 6 of 7


def test_rotate_api_reencrypts_in_batches_and_is_idempotent(
    engine: Engine, seeded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert key_ids(engine) == {"k1": VALUES}
    use(monkeypatch, "k2,k1")  # k2 active, k1 still readable
    seen: list[tuple[int, int]] = []
    report = rotate_keys(engine, Account, batch_size=250, progress=lambda d, t: seen.append((d, t)))
    assert (report.rows, report.batches, report.reencrypted, report.reindexed) == (ROWS, 3, VALUES, 0)
    assert report.remaining == 0 and report.to_do == ROWS and report.active_key == "k2"
    assert seen == [(250, ROWS), (500, ROWS), (600, ROWS)]
    assert key_ids(engine) == {"k2": VALUES}
    use(monkeypatch, "k2")  # the old key can now be retired
    assert_all_readable(engine)
    again = rotate_keys(engine, Account, batch_size=250)
    assert (again.rows, again.batches, again.to_do, again.remaining) == (0, 0, 0, 0)


def test_old_key_removed_too_early_is_key_not_found(engine: Engine, seeded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, "k2")
    with Session(engine) as s, pytest.raises(KeyNotFound, match=r"enc_rot_account\.(email|doc)"):
        s.scalars(select(Account)).all()
    with pytest.raises(KeyNotFound, match="rotation stopped at row id=1"):
        rotate_keys(engine, Account)
    assert key_ids(engine) == {"k1": VALUES}  # nothing was changed


def test_hmac_key_rotation_rebuilds_blind_indexes(engine: Engine, seeded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert index_ids(engine) == {"i1": ROWS - ROWS // 7}
    use(monkeypatch, "k1", index="i2,i1")
    with Session(engine) as s:
        # mid-rotation lookups hash under both index keys
        assert s.scalars(select(Account.id).where(Account.email == "user8@example.com")).all() == [8]
    report = rotate_keys(engine, Account, batch_size=100, columns=["email"])
    assert (report.reindexed, report.reencrypted, report.remaining) == (ROWS - ROWS // 7, 0, 0)
    assert index_ids(engine) == {"i2": ROWS - ROWS // 7}
    use(monkeypatch, "k1", index="i2")
    with Session(engine) as s:
        assert s.scalars(select(Account.id).where(Account.email == "USER9@example.com")).all() == [9]
        assert s.scalars(select(Account.id).where(Account.email.is_(None))).all()[:2] == [7, 14]


async def test_rotate_keys_async(async_engine: AsyncEngine, engine: Engine, seeded: None, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, "k2,k1", index="i2,i1")
    report = await rotate_keys_async(async_engine, Account, batch_size=200)
    assert (report.rows, report.batches, report.reencrypted, report.remaining) == (ROWS, 3, VALUES, 0)
    assert key_ids(engine) == {"k2": VALUES} and index_ids(engine) == {"i2": ROWS - ROWS // 7}
    use(monkeypatch, "k2", index="i2")
    assert_all_readable(engine)


def _cli(url: URL, env_keys: dict[str, str], batch: int) -> subprocess.Popen[str]:
    env = {**os.environ, **env_keys, "PYTHONPATH": str(HERE), "COLUMNS": "100"}
    return subprocess.Popen(
        [sys.executable, "-m", "sa_patterns.cli", "rotate-keys", "--model",
         "encryption_rotation_app:Account", "--url", url.render_as_string(hide_password=False),
         "--batch-size", str(batch)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_cli_killed_half_way_loses_nothing_and_resumes(
    engine: Engine, app_url: URL, seeded: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = app_url.update_query_dict({"application_name": "sap_rotate_test"})
    blocker = create_engine(url.update_query_dict({"application_name": "sap_rotate_blocker"}))
    with blocker.connect() as hold:
        # Hold row 301 so the run blocks inside a batch after committing the earlier ones:
        # killing it there is killing it half way, deterministically.
        hold.execute(text("SELECT id FROM enc_rot_account WHERE id = 301 FOR UPDATE"))
        proc = _cli(url, keys("k2,k1"), batch=20)
        try:
            for _ in range(600):
                with engine.connect() as probe:
                    waiting = probe.execute(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                        "'sap_rotate_test' AND wait_event_type = 'Lock'")).scalar_one()
                if waiting or proc.poll() is not None:
                    break
                time.sleep(0.1)
            assert waiting == 1, proc.communicate()
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()  # reap it and close its pipes
        hold.rollback()
    blocker.dispose()
    for _ in range(600):  # the killed client's backend rolls back and goes away
        with engine.connect() as probe:
            if not probe.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sap_rotate_test'"
            )).scalar_one():
                break
        time.sleep(0.1)

    assert proc.returncode == -signal.SIGKILL
    with engine.connect() as conn:
        done = conn.execute(text(
            "SELECT count(*) FROM enc_rot_account WHERE substring(doc from 1 for 4) = '\\x01026b32'::bytea"
        )).scalar_one()
    assert done == 300  # 15 committed batches of 20; the batch holding row 301 rolled back
    assert set(key_ids(engine)) == {"k1", "k2"}  # no other key id anywhere
    use(monkeypatch, "k2,k1")
    assert_all_readable(engine)  # nothing lost, every row decrypts

    resumed = _cli(url, keys("k2,k1"), batch=50)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "enc_rot_account: 300 rows in 6 batches" in out and "0 rows remaining" in out
    assert key_ids(engine) == {"k2": VALUES}
    use(monkeypatch, "k2")
    assert_all_readable(engine)


def test_cli_refuses_a_missing_keyring_before_touching_rows(app_url: URL, seeded: None, engine: Engine) -> None:
    url = app_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("SA_PATTERNS_KEYS")}
    proc = subprocess.run(
        [sys.executable, "-m", "sa_patterns.cli", "rotate-keys", "--model",
         "encryption_rotation_app:Account", "--url", url.render_as_string(hide_password=False)],
        env={**env, "PYTHONPATH": str(HERE)}, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "SA_PATTERNS_KEYS is not set" in proc.stderr
    assert key_ids(engine) == {"k1": VALUES}


# -- per-tenant keyrings: rotate one tenant, leave the other alone ---------------------------


def test_per_tenant_rotation(engine: Engine, owner_engine: Engine) -> None:
    t1_old, t1_new, t2 = (os.urandom(32) for _ in range(3))
    TENANT_RINGS.update({1: Keyring({"t1-a": t1_old}), 2: Keyring({"t2-a": t2})})
    try:
        for tenant in (1, 2):
            with sa_patterns.tenant_scope(tenant), Session(engine) as s:
                s.add_all([Vault(id=tenant * 100 + i, tenant=tenant, secret=f"s{tenant}-{i}") for i in range(5)])
                s.commit()
        TENANT_RINGS[1] = Keyring({"t1-b": t1_new, "t1-a": t1_old})
        with sa_patterns.tenant_scope(1):
            report = rotate_keys(engine, Vault, batch_size=2, where=Vault.__table__.c.tenant == 1)
        assert (report.rows, report.reencrypted, report.remaining, report.active_key) == (5, 5, 0, "t1-b")
        with engine.connect() as conn:
            kids = dict(conn.execute(text(
                "SELECT tenant, string_agg(DISTINCT convert_from(substring(secret from 3 for "
                "get_byte(secret, 1)), 'SQL_ASCII'), ',') FROM enc_rot_vault GROUP BY tenant")).all())
        assert kids == {1: "t1-b", 2: "t2-a"}  # tenant 2 untouched
        TENANT_RINGS[1] = Keyring({"t1-b": t1_new})
        with sa_patterns.tenant_scope(1), Session(engine) as s:
            assert sorted(s.scalars(select(Vault.secret).where(Vault.tenant == 1))) == [f"s1-{i}" for i in range(5)]
    finally:
        truncate(owner_engine, "enc_rot_vault")


def test_a_versioned_models_history_rotates_too(
    engine: Engine, owner_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Versioned model's history holds the table's ciphertexts: rotate_keys() re-encrypts them
    through history_table(), after which the old key can go and every version still reads."""
    from sa_patterns import history
    from sa_patterns.versioning import history_table

    types = [c.type for t in (Holder.__table__, history_table(Holder)) for c in t.columns
             if isinstance(c.type, EncryptedType)]

    def switch(enc: str) -> None:
        use(monkeypatch, enc)
        for type_ in types:
            type_.reset_keyring()

    switch("k1")
    try:
        with Session(engine) as s:
            holder = Holder(id=1, secret="first")
            s.add(holder)
            s.flush()
            holder.secret = "second"
            s.commit()
        switch("k2,k1")
        assert rotate_keys(engine, Holder).reencrypted == 1
        # the table's rotation opened version 3, already under k2: versions 1 and 2 remain
        assert rotate_keys(engine, history_table(Holder)).reencrypted == 2
        with engine.connect() as conn:
            kids = set(conn.scalars(text(
                "SELECT convert_from(substring(secret from 3 for get_byte(secret, 1)), 'SQL_ASCII') "
                "FROM enc_rot_holder_history")))
        assert kids == {"k2"}
        switch("k2")  # the old key retired: every version still reads
        with Session(engine) as s:
            assert [v.values["secret"] for v in history(s, s.get(Holder, 1))] == ["first", "second", "second"]
    finally:
        truncate(owner_engine, "enc_rot_holder", "enc_rot_holder_history")
