"""The event-sourcing DDL through Alembic: autogenerate → upgrade → check is clean → change
(channel, append-only guard) → replace/drop → downgrade base leaves nothing behind."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, MetaData, create_engine, text
from sqlalchemy.orm import DeclarativeBase

from sa_patterns import TenantMixin
from sa_patterns.cli.init import init
from sa_patterns.eventsourcing import CheckpointMixin, EventMixin, SnapshotMixin
from sa_patterns.roles import configured_roles
from sa_patterns.schema import quote


def build(*, channel: str | None = None, append_only: bool = True) -> MetaData:
    class Base(DeclarativeBase):
        pass

    class RtEvent(EventMixin, Base):
        __tablename__ = "es_rt_events"
        __event_channel__ = channel
        __append_only__ = append_only

    class RtSnapshot(SnapshotMixin, Base):
        __tablename__ = "es_rt_snapshots"

    class RtCheckpoint(CheckpointMixin, Base):
        __tablename__ = "es_rt_checkpoints"

    return Base.metadata


def catalog(conn, schema: str) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    def names(sql: str) -> set[str]:
        return {r[0] for r in conn.execute(text(sql), {"s": schema})}

    return {
        "tables": names("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE nspname = :s AND relkind = 'r'"),
        "functions": names("SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                           "WHERE nspname = :s"),
        "triggers": names("SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                          "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = :s "
                          "AND NOT tgisinternal"),
        "constraints": names("SELECT conname FROM pg_constraint c JOIN pg_namespace n "
                             "ON n.oid = c.connamespace WHERE nspname = :s"),
        "indexes": names("SELECT indexname FROM pg_indexes WHERE schemaname = :s"),
    }


def test_autogenerate_roundtrip(tmp_path: Path, pg_url: URL, db_schema: str) -> None:
    schema = f"{db_schema}_rt"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = pg_url.update_query_dict({"options": f"-csearch_path={schema}"})
    cfg = Config(str(init(tmp_path / "migrations", metadata="unused:unused")))
    cfg.attributes["configure_logger"] = False
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    versions = tmp_path / "migrations" / "versions"
    try:
        cfg.attributes["target_metadata"] = build()
        command.revision(cfg, message="events", autogenerate=True, rev_id="r1")
        script = (versions / "r1_events.py").read_text()
        assert "op.create_entity(sa_patterns.schema.Trigger(" in script
        assert "es_rt_events_gapless_fk" in script and "es_rt_events_stream_key" in script
        command.upgrade(cfg, "head")
        command.check(cfg)  # no false diff: server defaults, generated column, self-FK, triggers
        with admin.connect() as conn:
            found = catalog(conn, schema)
        assert {"es_rt_events", "es_rt_snapshots", "es_rt_checkpoints"} <= found["tables"]
        assert found["functions"] == {"es_rt_events_notify", "es_rt_events_append_only"}
        assert found["triggers"] == {"es_rt_events_notify", "es_rt_events_append_only"}
        assert {"es_rt_events_stream_key", "es_rt_events_gapless_fk", "es_rt_events_version_check",
                "es_rt_snapshots_aggregate_key"} <= found["constraints"]
        assert {"ix_es_rt_events_event_type", "ix_es_rt_events_recorded_at",
                "ix_es_rt_events_position"} <= found["indexes"]

        # an unchanged model yields no revision at all
        cfg.cmd_opts = argparse.Namespace(autogenerate=True)
        command.revision(cfg, message="noop", autogenerate=True)
        cfg.cmd_opts = None
        assert len(list(versions.glob("*.py"))) == 1

        # change: another NOTIFY channel (trigger replaced), no append-only guard (dropped)
        cfg.attributes["target_metadata"] = build(channel="bank_events", append_only=False)
        command.revision(cfg, message="change", autogenerate=True, rev_id="r2")
        script = (versions / "r2_change.py").read_text()
        assert "replace_entity" in script and "drop_entity" in script
        command.upgrade(cfg, "head")
        command.check(cfg)
        with admin.connect() as conn:
            found = catalog(conn, schema)
            args = conn.execute(text(
                "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname = :s AND tgname = 'es_rt_events_notify'"
            ), {"s": schema}).scalar_one()
        assert found["triggers"] == {"es_rt_events_notify"}
        assert found["functions"] == {"es_rt_events_notify"}
        assert "'bank_events'" in args

        # downgrade of the change restores the guard; downgrade base leaves nothing
        command.downgrade(cfg, "r1")
        with admin.connect() as conn:
            assert catalog(conn, schema)["triggers"] == {"es_rt_events_notify", "es_rt_events_append_only"}
        command.downgrade(cfg, "base")
        with admin.connect() as conn:
            found = catalog(conn, schema)
        assert found["tables"] == {"alembic_version"}
        assert not found["functions"] and not found["triggers"]
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


def build_rls(runner_role: str | None = "@app") -> MetaData:
    class Base(DeclarativeBase):
        pass

    class RtrEvent(EventMixin, TenantMixin, Base):
        __tablename__ = "es_rtr_events"
        __rls__ = True
        __runner_role__ = runner_role

    class RtrSnapshot(SnapshotMixin, TenantMixin, Base):
        __tablename__ = "es_rtr_snapshots"
        __rls__ = True

    return Base.metadata


def test_autogenerate_roundtrip_under_rls(tmp_path: Path, pg_url: URL, db_schema: str) -> None:
    """A tenant log under RLS: autogenerate writes the reader functions (with their grant to the
    app role) and the owner's read policy, finds nothing to do once applied, moves the grant
    when the runner role changes, and downgrade base removes it all."""
    schema, role = f"{db_schema}_rls", f"sap_es_runner_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {schema}"))
        conn.execute(text(f"CREATE ROLE {quote(role)} NOLOGIN"))
    url = pg_url.update_query_dict({"options": f"-csearch_path={schema}"})
    cfg = Config(str(init(tmp_path / "migrations", metadata="unused:unused")))
    cfg.attributes["configure_logger"] = False
    cfg.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    versions = tmp_path / "migrations" / "versions"
    readers = {"es_rtr_events_log_after", "es_rtr_events_log_end", "es_rtr_events_log_tenants"}

    def state() -> dict[str, object]:
        with admin.connect() as conn:
            return {
                "functions": catalog(conn, schema)["functions"],
                "policies": {r[0] for r in conn.execute(text(
                    "SELECT policyname FROM pg_policies WHERE schemaname = :s"), {"s": schema})},
                "executors": {r[0] for r in conn.execute(text(
                    "SELECT coalesce(nullif(a.grantee, 0)::regrole::text, 'PUBLIC') FROM pg_proc p "
                    "JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a "
                    "WHERE n.nspname = :s AND p.proname LIKE 'es_rtr_events_log_%' "
                    "AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner"), {"s": schema})},
            }

    try:
        cfg.attributes["target_metadata"] = build_rls()
        command.revision(cfg, message="rls", autogenerate=True, rev_id="r1")
        script = (versions / "r1_rls.py").read_text()
        assert "import sa_patterns.eventsourcing.tables" in script
        assert "op.create_entity(sa_patterns.eventsourcing.tables.LogReader(" in script
        command.upgrade(cfg, "head")
        command.check(cfg)
        found = state()
        assert readers <= found["functions"]  # type: ignore[operator]
        assert {"es_rtr_events_log_reader", "es_rtr_events_tenant_isolation",
                "es_rtr_snapshots_tenant_isolation"} <= found["policies"]  # type: ignore[operator]
        # EXECUTE revoked from PUBLIC, granted to the configured app role alone
        assert found["executors"] == {configured_roles().app}

        cfg.attributes["target_metadata"] = build_rls(runner_role=role)
        command.revision(cfg, message="runner", autogenerate=True, rev_id="r2")
        assert "replace_entity" in (versions / "r2_runner.py").read_text()
        command.upgrade(cfg, "head")
        command.check(cfg)
        assert state()["executors"] == {role}

        command.downgrade(cfg, "r1")
        assert state()["executors"] == {configured_roles().app}
        command.downgrade(cfg, "base")
        found = state()
        assert not found["functions"] and not found["policies"]
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text(f"DROP ROLE IF EXISTS {quote(role)}"))
        admin.dispose()
