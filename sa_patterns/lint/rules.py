"""What each finding means on a live table: the lock it takes, what that lock blocks, the online
alternative, and whether it is blocking. Squawk's rules are described here, not re-implemented;
the ``sa_patterns`` rules cover what squawk cannot see (the locks of policies, triggers and
row-level security, backfills in the migration's transaction, materialized view refreshes)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["RULES", "Kind", "Rule", "rule", "statement_table", "toolkit_rules"]

Kind = Literal["scan", "queue", "fails", "error", "advice"]
"""How a rule's severity is decided:

``scan``   blocking; the lock is held for a scan, rewrite or build that grows with the table, so
           it is advice on a new, empty or small table (``--url``)
``queue``  blocking on any existing table: a brief lock that still waits behind every open
           transaction on the table while everything after it waits behind it
``fails``  the statement fails on a table that has rows (advice only on a new or empty one)
``error``  the statement cannot run as written
``advice`` no lock that stalls the application: style, compatibility, robustness
"""


@dataclass(frozen=True)
class Rule:
    name: str
    kind: Kind
    lock: str
    alternative: str
    source: Literal["squawk", "sa_patterns"] = "squawk"


_BATCHES = "backfill in batches that commit (never one UPDATE in the migration's transaction)"
_CHECK = (
    "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in its own transaction, then "
    "SET NOT NULL (no scan since PostgreSQL 12) and drop the CHECK"
)
_CONCURRENTLY = (
    "CREATE INDEX CONCURRENTLY inside op.get_context().autocommit_block() "
    "(op.create_index(..., postgresql_concurrently=True))"
)
_TIMEOUT = "SET lock_timeout (e.g. '2s') before it and retry the revision when it times out"

RULES: dict[str, Rule] = {
    r.name: r
    for r in [
        Rule("adding-field-with-default", "scan",
             "ACCESS EXCLUSIVE for a table rewrite (a volatile default or a stored generated "
             "column): reads and writes wait",
             "add the column without the default (a non-volatile default is free), set the "
             f"default for new rows, {_BATCHES}; for a generated column: a plain column kept by "
             "a trigger, backfilled in batches"),
        Rule("adding-foreign-key-constraint", "scan",
             "SHARE ROW EXCLUSIVE on both tables for the validating scan: writes wait",
             "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in a separate transaction"),
        Rule("adding-not-nullable-field", "scan",
             "ACCESS EXCLUSIVE for a full scan (SET NOT NULL): reads and writes wait", _CHECK),
        Rule("adding-required-field", "fails",
             "ACCESS EXCLUSIVE; fails outright when the table has rows (NOT NULL, no default)",
             f"add the column nullable, {_BATCHES}, then {_CHECK}"),
        Rule("adding-serial-primary-key-field", "scan",
             "ACCESS EXCLUSIVE while the primary key's index is built: reads and writes wait",
             "CREATE UNIQUE INDEX CONCURRENTLY, then ADD PRIMARY KEY USING INDEX"),
        Rule("ban-concurrent-index-creation-in-transaction", "error",
             "none: CREATE INDEX CONCURRENTLY fails inside a transaction",
             "run it inside op.get_context().autocommit_block()"),
        Rule("changing-column-type", "scan",
             "ACCESS EXCLUSIVE for a table rewrite (most type changes): reads and writes wait",
             f"add a new column kept by a trigger, {_BATCHES}, then switch the application "
             "and drop the old column (widening varchar or varchar to text needs no rewrite)"),
        Rule("constraint-missing-not-valid", "scan",
             "a validating scan under the constraint's lock (ACCESS EXCLUSIVE for a CHECK, "
             "SHARE ROW EXCLUSIVE for a FOREIGN KEY)",
             "ADD CONSTRAINT ... NOT VALID, then VALIDATE CONSTRAINT in a separate transaction "
             "(SHARE UPDATE EXCLUSIVE: reads and writes go on)"),
        Rule("disallowed-unique-constraint", "scan",
             "ACCESS EXCLUSIVE while the unique index is built: reads and writes wait",
             "CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX"),
        Rule("require-concurrent-index-creation", "scan",
             "SHARE for the whole index build: writes wait, reads go on", _CONCURRENTLY),
        Rule("require-concurrent-index-deletion", "queue",
             "ACCESS EXCLUSIVE on the table, brief: reads and writes wait",
             "DROP INDEX CONCURRENTLY inside op.get_context().autocommit_block()"),
        Rule("require-concurrent-reindex", "scan",
             "SHARE on the table (ACCESS EXCLUSIVE on the index) for the rebuild",
             "REINDEX ... CONCURRENTLY outside a transaction"),
        Rule("require-concurrent-partition-detach", "queue",
             "ACCESS EXCLUSIVE on the parent table",
             "DETACH PARTITION ... CONCURRENTLY outside a transaction"),
        Rule("prefer-repack", "scan",
             "ACCESS EXCLUSIVE for the rewrite (VACUUM FULL, CLUSTER)", "pg_repack"),
        Rule("require-lock-timeout", "queue",
             "the statement's lock, with no limit on the wait: it queues behind any open "
             "transaction on the table and every query after it queues behind it", _TIMEOUT),
        Rule("require-timeout-settings", "queue",
             "the statement's lock, with no limit on the wait", _TIMEOUT),
        Rule("require-statement-timeout", "advice", "none by itself",
             "SET statement_timeout for the steps that hold a strong lock"),
        # the sa_patterns rules: what squawk does not see
        Rule("policy-lock", "queue",
             "ACCESS EXCLUSIVE on the table, brief (CREATE/ALTER/DROP POLICY): reads and "
             "writes wait", _TIMEOUT, "sa_patterns"),
        Rule("row-security-lock", "queue",
             "ACCESS EXCLUSIVE on the table, brief (ALTER TABLE ... ROW LEVEL SECURITY): "
             "reads and writes wait", _TIMEOUT, "sa_patterns"),
        Rule("trigger-lock", "queue",
             "SHARE ROW EXCLUSIVE on the table, brief (CREATE TRIGGER, ENABLE/DISABLE "
             "TRIGGER): writes wait, reads go on", _TIMEOUT, "sa_patterns"),
        Rule("drop-trigger-lock", "queue",
             "ACCESS EXCLUSIVE on the table, brief (DROP TRIGGER): reads and writes wait",
             _TIMEOUT, "sa_patterns"),
        Rule("backfill-in-transaction", "scan",
             "ROW EXCLUSIVE, and a lock on every row it changes until the migration commits: "
             "writers of those rows wait (behind any strong lock taken before it, too)",
             "batches that commit, outside the migration's transaction, resumable after an "
             "interruption", "sa_patterns"),
        Rule("refresh-materialized-view", "scan",
             "ACCESS EXCLUSIVE on the view for the whole refresh: its readers wait",
             "REFRESH MATERIALIZED VIEW CONCURRENTLY (needs a unique index) outside the "
             "migration's transaction", "sa_patterns"),
        Rule("dynamic-sql", "advice",
             "unknown: squawk cannot see inside a DO block",
             "run the statements themselves, or check the block's locks by hand", "sa_patterns"),
        Rule("not-linted", "advice",
             "unknown: the revision does not render offline (alembic upgrade --sql)",
             "keep database reads out of upgrade()/downgrade() (no op.get_bind() queries), "
             "or lint that revision by hand", "sa_patterns"),
    ]
}


def rule(name: str) -> Rule:
    """The rule named ``name``; squawk's rules not in the table (style, compatibility,
    robustness, or newer than this table) are advice."""
    return RULES.get(name) or Rule(name, "advice", "none that stalls the application",
                                   "see https://squawkhq.com/docs/" + name)


_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_NAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"
_TABLE_OF = [
    re.compile(p, re.IGNORECASE | re.DOTALL)
    for p in (
        rf"^ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<t>{_NAME})",
        rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
        rf"(?:{_NAME}\s+)?ON\s+(?:ONLY\s+)?(?P<t>{_NAME})",
        rf"^(?:CREATE|ALTER|DROP)\s+POLICY\s+(?:IF\s+EXISTS\s+)?{_IDENT}\s+ON\s+(?P<t>{_NAME})",
        rf"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\s+{_IDENT}\s.*?\sON\s+(?P<t>{_NAME})",
        rf"^DROP\s+TRIGGER\s+(?:IF\s+EXISTS\s+)?{_IDENT}\s+ON\s+(?P<t>{_NAME})",
        rf"^UPDATE\s+(?:ONLY\s+)?(?P<t>{_NAME})",
        rf"^DELETE\s+FROM\s+(?:ONLY\s+)?(?P<t>{_NAME})",
        rf"^CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<t>{_NAME})",
        rf"^(?:TRUNCATE|VACUUM\s+FULL|CLUSTER)\s+(?:TABLE\s+)?(?:ONLY\s+)?(?P<t>{_NAME})",
        rf"^REINDEX\s+TABLE\s+(?:CONCURRENTLY\s+)?(?P<t>{_NAME})",
        rf"^REFRESH\s+MATERIALIZED\s+VIEW\s+(?:CONCURRENTLY\s+)?(?P<t>{_NAME})",
        rf"^DROP\s+INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+EXISTS\s+)?(?P<index>{_NAME})",
    )
]
_CREATE_TABLE = _TABLE_OF[7]


def statement_table(sql: str) -> tuple[str | None, str | None]:
    """The table a statement works on, as written (``(None, index)`` for ``DROP INDEX``: the
    index's table is known only to the database)."""
    text = sql.strip()
    for pattern in _TABLE_OF:
        found = pattern.match(text)
        if found:
            groups = found.groupdict()
            return groups.get("t"), groups.get("index")
    return None, None


def created_table(sql: str) -> str | None:
    found = _CREATE_TABLE.match(sql.strip())
    return found.group("t") if found else None


_TOOLKIT: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(?:CREATE|ALTER|DROP)\s+POLICY\b", re.I), "policy-lock"),
    (re.compile(r"^ALTER\s+TABLE\b[^;]*?\b(?:ENABLE|DISABLE|FORCE)\s+ROW\s+LEVEL\s+SECURITY", re.I | re.S),
     "row-security-lock"),
    (re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\b", re.I), "trigger-lock"),
    (re.compile(r"^ALTER\s+TABLE\b[^;]*?\b(?:ENABLE|DISABLE)\s+(?:REPLICA\s+|ALWAYS\s+)?TRIGGER\b", re.I | re.S),
     "trigger-lock"),
    (re.compile(r"^DROP\s+TRIGGER\b", re.I), "drop-trigger-lock"),
    (re.compile(r"^(?:UPDATE|DELETE\s+FROM)\s", re.I), "backfill-in-transaction"),
    (re.compile(r"^REFRESH\s+MATERIALIZED\s+VIEW\s+(?!CONCURRENTLY)", re.I), "refresh-materialized-view"),
    (re.compile(r"^DO\s+(?!\$sa_patterns\$)", re.I), "dynamic-sql"),
]


def toolkit_rules(sql: str) -> list[str]:
    """The ``sa_patterns`` rules a statement breaks (the toolkit's own DO blocks are grants
    and take no table lock)."""
    text = sql.strip()
    return [name for pattern, name in _TOOLKIT if pattern.match(text)]


_SET_TIMEOUT = re.compile(
    r"^(?:SET\s+(?P<local>LOCAL\s+)?(?:SESSION\s+)?lock_timeout\s*(?:=|TO)\s*'?(?P<v>[^';\s]+)"
    r"|SELECT\s+(?:pg_catalog\.)?set_config\(\s*'lock_timeout'\s*,\s*'(?P<v2>[^']*)'\s*,\s*(?P<l2>\w+))",
    re.IGNORECASE,
)


def lock_timeout_change(sql: str) -> tuple[bool, bool] | None:
    """``(set, local)`` when ``sql`` sets lock_timeout (``set`` False for 0: no limit)."""
    found = _SET_TIMEOUT.match(sql.strip())
    if not found:
        return None
    value = found.group("v") or found.group("v2") or "0"
    local = bool(found.group("local")) or (found.group("l2") or "").lower() == "true"
    return value not in ("0", "DEFAULT", "default"), local
