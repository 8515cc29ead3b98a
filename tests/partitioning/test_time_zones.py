"""Partition periods, bounds and retention are UTC, whatever the session's TimeZone.

The maintenance function runs at fixed instants near period boundaries (its clock,
``sa_patterns.partition_clock``, set by ``maintain(at=...)``) in sessions at UTC, UTC-8, UTC-12
and UTC+14; every run is compared with a model of the rules computed here in UTC: which
partitions exist, which were dropped, their bounds as the catalog holds them, and where a row at
the boundary lands. The same answers in every zone is the point. A second set runs at the
database's real ``now()`` (read back in the same transaction, so nothing depends on timing)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    DateTime,
    MetaData,
    Table,
    text,
)

from sa_patterns import health
from sa_patterns.audit import audit_log_table
from sa_patterns.errors import ConfigurationError
from sa_patterns.partitioning import (
    maintain,
    partition_prefix,
    partition_specs,
    partition_table,
    range_partition,
)
from sa_patterns.schema import create_all

UTC = dt.timezone.utc
#: UTC, UTC-8 (UTC-7 in summer), UTC+14 and UTC-12 (POSIX signs: Etc/GMT+12 is west).
ZONES = ("UTC", "America/Los_Angeles", "Pacific/Kiritimati", "Etc/GMT+12")
UNITS = ("day", "week", "month", "year")
KEYS: dict[str, Any] = {"tstz": DateTime(timezone=True), "ts": DateTime(), "date": Date()}
FORMATS = {"day": "%Y%m%d", "week": "%G%V", "month": "%Y%m", "year": "%Y"}
#: A period boundary per unit (UTC): Friday 1 March 2024 after a leap day; Monday 4 January 2021,
#: the first ISO week of 2021 after week 53 of 2020; 1 March 2024; 1 January 2025.
BOUNDARY = {
    "day": dt.datetime(2024, 3, 1),
    "week": dt.datetime(2021, 1, 4),
    "month": dt.datetime(2024, 3, 1),
    "year": dt.datetime(2025, 1, 1),
}
PREMAKE, RETENTION = 1, 2
US = dt.timedelta(microseconds=1)
HOUR = dt.timedelta(hours=1)


# --------------------------------------------------------------------------------------------
# the rules, in UTC (naive datetimes are UTC wall time)


def trunc(t: dt.datetime, unit: str) -> dt.datetime:
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return day
    if unit == "week":
        return day - dt.timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def shift(start: dt.datetime, unit: str, n: int) -> dt.datetime:
    """A period start moved by ``n`` periods."""
    if unit == "day":
        return start + dt.timedelta(days=n)
    if unit == "week":
        return start + dt.timedelta(weeks=n)
    months = start.month - 1 + n * (12 if unit == "year" else 1)
    return start.replace(year=start.year + months // 12, month=months % 12 + 1)


def name(table: str, start: dt.datetime, unit: str) -> str:
    return f"{partition_prefix(table)}_p{start.strftime(FORMATS[unit])}"


def expected_run(held: set[dt.datetime], at: dt.datetime, unit: str) -> tuple[set[dt.datetime], set[dt.datetime]]:
    """What a run at ``at`` leaves (period starts) and drops: the current period and PREMAKE
    ahead are made; a partition whose upper bound is at or before the current period's start
    minus RETENTION periods is dropped."""
    current = trunc(at, unit)
    after = held | {shift(current, unit, i) for i in range(PREMAKE + 1)}
    horizon = shift(current, unit, -RETENTION)
    dropped = {s for s in after if shift(s, unit, 1) <= horizon}
    return after - dropped, dropped


def bound_literal(t: dt.datetime, key: str) -> str:
    if key == "date":
        return f"'{t:%Y-%m-%d}'"
    return f"'{t:%Y-%m-%d %H:%M:%S}{'+00' if key == 'tstz' else ''}'"


# --------------------------------------------------------------------------------------------
# the database


def models(unit: str, *, retention: int | None = RETENTION) -> MetaData:
    md = MetaData()
    for key, type_ in KEYS.items():
        table = Table(
            f"tz_{unit}_{key}", md,
            Column("id", BigInteger, primary_key=True),
            Column("at", type_, primary_key=True),
        )
        partition_table(table, range_partition("at", interval=unit, premake=PREMAKE, retention=retention))  # type: ignore[arg-type]
    return md


def in_zone(conn: Connection, zone: str) -> None:
    conn.execute(text("SELECT set_config('TimeZone', :z, true)"), {"z": zone})
    assert conn.execute(text("SHOW TimeZone")).scalar_one() == zone


@dataclass(frozen=True)
class Part:
    name: str
    bound: str
    sealed: bool


def parts(conn: Connection, table: str) -> dict[str, Part]:
    """A table's partitions as the catalog holds them, bounds printed in UTC (ISO)."""
    zone = conn.execute(text("SHOW TimeZone")).scalar_one()
    conn.execute(text("SELECT set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO', true)"))
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid), c.relrowsecurity AND c.relforcerowsecurity "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": table},
    ).all()
    in_zone(conn, zone)
    return {r[0]: Part(r[0], r[1], r[2]) for r in rows}


def landed(conn: Connection, sql: str) -> dict[Any, str]:
    """Which partition each row is in: ``sql`` selects (key, tableoid::regclass::text)."""
    return {row[0]: row[1] for row in conn.execute(text(sql))}


def drop_partitions(conn: Connection, tables: list[str]) -> None:
    """Start from no partition at all (create_all made them at the real now)."""
    for table in tables:
        for part in parts(conn, table):
            conn.execute(text(f'DROP TABLE "{part}"'))


def expected_parts(table: str, key: str, unit: str, starts: set[dt.datetime]) -> dict[str, Part]:
    return {
        name(table, s, unit): Part(
            name(table, s, unit),
            f"FOR VALUES FROM ({bound_literal(s, key)}) TO ({bound_literal(shift(s, unit, 1), key)})",
            True,
        )
        for s in starts
    }


def instants(unit: str) -> list[dt.datetime]:
    """Runs near the boundary B: well before, an hour before (already the next day east of
    UTC+1), a microsecond before, at B, and an hour after (still the day before west of UTC)."""
    b = BOUNDARY[unit]
    return [shift(b, unit, -4), b - HOUR, b - US, b, b + HOUR]


# --------------------------------------------------------------------------------------------
# maintenance at fixed instants


@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("zone", ZONES)
def test_periods_and_retention_are_utc_in_every_zone(connection: Connection, zone: str, unit: str) -> None:
    md = models(unit)
    create_all(connection, md)
    tables = [t.name for t in md.sorted_tables]
    drop_partitions(connection, tables)
    in_zone(connection, zone)
    held: set[dt.datetime] = set()
    seen: dict[dt.datetime, set[dt.datetime]] = {}
    for at in instants(unit):
        held, _ = expected_run(held, at, unit)
        maintain(connection, md, at=at.replace(tzinfo=UTC))
        for table in tables:
            key = table.rsplit("_", 1)[1]
            assert parts(connection, table) == expected_parts(table, key, unit, held), (zone, unit, at, table)
        seen[at] = held
    # the model's answers, spelled out: a microsecond before B, B-3 (ending B-2) is still kept
    # and B made ahead; at B, B-3 is dropped and B+1 made
    b = BOUNDARY[unit]
    assert seen[b - HOUR] == seen[b - US] == {shift(b, unit, i) for i in (-3, -1, 0)}
    assert seen[b] == seen[b + HOUR] == {shift(b, unit, i) for i in (-1, 0, 1)}
    assert connection.execute(text("SELECT current_setting('sa_patterns.partition_clock')")).scalar_one() == ""


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("unit", UNITS)
def test_a_row_at_the_boundary_lands_in_its_utc_period(connection: Connection, zone: str, unit: str) -> None:
    """Inserted from a session in ``zone``: a ``timestamptz`` by its instant, a ``timestamp`` as
    UTC wall time, a ``date`` as a UTC date."""
    md = models(unit)
    create_all(connection, md)
    b = BOUNDARY[unit]
    in_zone(connection, zone)
    maintain(connection, md, at=(b - US).replace(tzinfo=UTC))  # made B-1 and B
    values = {
        "tstz": ((b - US).replace(tzinfo=UTC), b.replace(tzinfo=UTC)),
        "ts": (b - US, b),
        "date": ((b - US).date(), b.date()),
    }
    for key, (before, at) in values.items():
        table = f"tz_{unit}_{key}"
        connection.execute(text(f"INSERT INTO {table} (id, at) VALUES (1, :before), (2, :at)"), {"before": before, "at": at})
        assert landed(connection, f"SELECT id, tableoid::regclass::text FROM {table}") == {1: name(table, shift(b, unit, -1), unit), 2: name(table, b, unit)}, (zone, key)
    # the same instants written as text in the session's own zone land alike
    local = connection.execute(
        text("SELECT (CAST(:b AS timestamptz) - interval '1 microsecond')::text, CAST(:b AS timestamptz)::text"),
        {"b": b.replace(tzinfo=UTC)},
    ).one()
    table = f"tz_{unit}_tstz"
    connection.execute(text(f"INSERT INTO {table} (id, at) VALUES (3, CAST(:x AS timestamptz)), (4, CAST(:y AS timestamptz))"), {"x": local[0], "y": local[1]})
    assert landed(connection, f"SELECT id, tableoid::regclass::text FROM {table} WHERE id > 2") == {3: name(table, shift(b, unit, -1), unit), 4: name(table, b, unit)}


def test_maintain_at_wants_an_instant(connection: Connection) -> None:
    with pytest.raises(ConfigurationError, match="aware datetime"):
        maintain(connection, models("day"), at=dt.datetime(2024, 3, 1))


# --------------------------------------------------------------------------------------------
# at the real now(): the partition whose range ended exactly RETENTION periods before this one


@pytest.mark.parametrize("unit", ["day", "week", "month"])
@pytest.mark.parametrize("zone", ZONES)
def test_retention_at_the_real_now_is_not_a_period_late(connection: Connection, zone: str, unit: str) -> None:
    in_zone(connection, zone)
    md = models(unit, retention=1)
    create_all(connection, md)  # runs the function at now(): the transaction's start
    now = connection.execute(text("SELECT now() AT TIME ZONE 'UTC'")).scalar_one()
    current = trunc(now, unit)
    expired, kept = shift(current, unit, -2), shift(current, unit, -1)  # ends at the horizon / at current
    for table in (t.name for t in md.sorted_tables):
        key = table.rsplit("_", 1)[1]
        for start in (expired, kept):
            connection.execute(text(
                f'CREATE TABLE "{name(table, start, unit)}" PARTITION OF {table} FOR VALUES '
                f"FROM ({bound_literal(start, key)}) TO ({bound_literal(shift(start, unit, 1), key)})"
            ))
    maintain(connection, md)
    for table in (t.name for t in md.sorted_tables):
        assert set(parts(connection, table)) == {name(table, s, unit) for s in (kept, current, shift(current, unit, 1))}, (zone, table)


# --------------------------------------------------------------------------------------------
# the audit log's monthly partitions


def audit_models() -> MetaData:
    md = MetaData()
    audit_log_table(md, partition_by_month=True, premake=PREMAKE, retention_months=RETENTION)
    return md


@pytest.mark.parametrize("zone", ZONES)
def test_audit_log_months_are_utc(connection: Connection, zone: str) -> None:
    md = audit_models()
    create_all(connection, md)
    drop_partitions(connection, ["audit_log"])
    in_zone(connection, zone)
    held: set[dt.datetime] = set()
    for at in instants("month"):
        held, _ = expected_run(held, at, "month")
        maintain(connection, md, at=at.replace(tzinfo=UTC))
        assert parts(connection, "audit_log") == expected_parts("audit_log", "tstz", "month", held), (zone, at)
    b = BOUNDARY["month"]
    assert held == {shift(b, "month", i) for i in (-1, 0, 1)}
    # entries recorded either side of the boundary land in their UTC month
    connection.execute(text(
        "INSERT INTO audit_log (table_name, operation, primary_key, transaction_id, recorded_at) "
        "VALUES ('t', 'INSERT', '{\"id\": 1}', 1, :before), ('t', 'INSERT', '{\"id\": 2}', 1, :at)"
    ), {"before": (b - US).replace(tzinfo=UTC), "at": b.replace(tzinfo=UTC)})
    assert landed(connection, "SELECT primary_key->>'id', tableoid::regclass::text FROM audit_log") == {"1": name("audit_log", shift(b, "month", -1), "month"), "2": name("audit_log", b, "month")}


@pytest.mark.parametrize("zone", ZONES)
def test_audit_log_retention_at_the_real_now(connection: Connection, zone: str) -> None:
    in_zone(connection, zone)
    md = MetaData()
    audit_log_table(md, partition_by_month=True, premake=1, retention_months=1)
    create_all(connection, md)
    now = connection.execute(text("SELECT now() AT TIME ZONE 'UTC'")).scalar_one()
    current = trunc(now, "month")
    expired, kept = shift(current, "month", -2), shift(current, "month", -1)
    for start in (expired, kept):
        connection.execute(text(
            f'CREATE TABLE "{name("audit_log", start, "month")}" PARTITION OF audit_log FOR VALUES '
            f"FROM ({bound_literal(start, 'tstz')}) TO ({bound_literal(shift(start, 'month', 1), 'tstz')})"
        ))
    maintain(connection, md)
    assert set(parts(connection, "audit_log")) == {name("audit_log", s, "month") for s in (kept, current, shift(current, "month", 1))}


# --------------------------------------------------------------------------------------------
# the doctor's next-period check


@dataclass
class Ctx:
    connection: Connection
    metadata: MetaData


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("unit", UNITS)
def test_next_period_check_counts_utc_periods(connection: Connection, zone: str, unit: str) -> None:
    md = models(unit)
    create_all(connection, md)
    drop_partitions(connection, [t.name for t in md.sorted_tables])
    in_zone(connection, zone)
    b = BOUNDARY[unit]
    ctx = Ctx(connection, md)
    clock = text("SELECT set_config('sa_patterns.partition_clock', :at, true)")
    maintain(connection, md, at=(b - HOUR).replace(tzinfo=UTC))  # B-1 and B
    for at in (b - HOUR, b - US):  # ready: B exists
        connection.execute(clock, {"at": at.replace(tzinfo=UTC).isoformat()})
        assert health.check_partitions(ctx) == [], (zone, at)
    connection.execute(clock, {"at": b.replace(tzinfo=UTC).isoformat()})  # B+1 is next: missing
    found = health.check_partitions(ctx)
    nxt = shift(b, unit, 1)
    assert sorted(found) == sorted(
        f"{t}: no partition for the next {unit} ({name(t, nxt, unit)}, from {nxt:%Y-%m-%d} UTC); "
        "run `sa-patterns partitions maintain` (and schedule it)."
        for t in partition_specs(md)
    )
