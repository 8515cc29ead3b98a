"""``op.encrypt_column``: a plaintext text column of a populated table becomes an
``EncryptedString`` column in place, without stalling its writers; ``op.decrypt_column`` is its
downgrade.

Autogenerate writes ``alter_column(type_=EncryptedString())``: ``ALTER TYPE`` text to bytea fails
(no cast) or, with ``USING``, rewrites the table under ACCESS EXCLUSIVE, and it would store the
text's bytes, not ciphertext; the audit log and the history keep the plaintext. A model whose
column changes from a text type to :class:`~sa_patterns.EncryptedString` gets this operation
instead (the comparator at the end of this module). It runs, outside the migration's
transaction:

1. brief (``SET LOCAL lock_timeout``, retried): ``<column>_sa_enc bytea`` added beside the
   plaintext column (and the blind index column), the same on the history table, and a trigger
   that clears the ciphertext (and a blind index the writer did not set) of a row whose plaintext
   the old application writes meanwhile: that row is to be done again;
2. a resumable backfill (:mod:`sa_patterns.backfill`, ``rows=``) that encrypts each row with the
   keyring and computes its blind index; the same for the history's copies;
3. the blind index's index ``CREATE INDEX CONCURRENTLY``;
4. catch-up passes over the rows written since (batched, no table lock), until no plaintext
   write has arrived for ``quiet_for`` seconds (the old application is retired);
5. the swap, one brief transaction: the last rows encrypted, the trigger dropped, the plaintext
   column dropped, the ciphertext column renamed into its place (history too), and a ``CHECK``
   that every value is an envelope (``NOT VALID``, then validated without blocking writes): a
   plaintext written to the column afterwards is refused, never stored;
6. ``SET NOT NULL`` if the column was (a validated check first: no scan under the lock);
7. the audit log's entries of the table rewritten, batched: each plaintext value of the column in
   ``old_row``/``new_row`` becomes ``"\\x<envelope>"``, the form the log gives new entries.

Readers never fail across the swap: before it the column is text, and ``EncryptedString`` reads
a ``str`` result (only a text column returns one) as the plaintext it still is, or as the
``\\x``-hex envelope the new application wrote through it (authenticated before it is believed);
after it the column is bytea. Prepared statements are the exception PostgreSQL makes: a
statement prepared before the swap fails once after it (*cached plan must not change result
type*), so applications run with ``prepare_threshold=None`` (psycopg) during the adoption (see
docs/adopting.md).

Every step is idempotent: an upgrade run again resumes. Offline (``--sql``) the DDL renders as
SQL and the encryption, which needs the keyring and a live database, as comments.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from alembic.operations import ops as alembic_ops
from alembic.util import PriorityDispatchResult
from sqlalchemy import (
    Column,
    MetaData,
    Table,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import String

from ..backfill import Backfill, Batch, run_backfill
from ..encryption.blind_index import encrypted_type
from ..encryption.keyring import KeyringProvider
from ..encryption.types import EncryptedString
from ..errors import BackfillError, ConfigurationError
from ..schema.objects import ident, qualified, quote
from .online_steps import (
    LOCK_NOT_AVAILABLE,
    OnlineSteps,
    check_lock_timeout,
    metadata_tables,
    run_last,
)

__all__ = ["DecryptColumnOp", "EncryptColumnOp", "envelope_check"]


def envelope_check(column: str, *, not_null: bool = False) -> str:
    """SQL true for a sealed envelope (format 1: version byte, key id length, key id, 12-byte
    nonce, 16-byte tag): the guard that refuses plaintext written to a ciphertext column."""
    c = quote(column)
    return (
        f"CASE WHEN {c} IS NULL THEN {'false' if not_null else 'true'} WHEN length({c}) < 31 THEN false "
        f"ELSE get_byte({c}, 0) = 1 AND length({c}) >= 30 + get_byte({c}, 1) END"
    )


def _resolve_keyring(keyring: KeyringProvider | str | None) -> KeyringProvider | None:
    """``"package.module:NAME"`` names a Keyring (or a zero-argument callable) the migration
    imports; a per-tenant provider cannot serve a migration that walks every tenant's rows."""
    if isinstance(keyring, str):
        module, _, attr = keyring.partition(":")
        if not module or not attr:
            raise ConfigurationError(f"keyring={keyring!r}: write 'package.module:NAME'.")
        found: Any = importlib.import_module(module)
        for part in attr.split("."):
            found = getattr(found, part)
        keyring = found
    return keyring  # type: ignore[return-value]


class _ColumnOp(MigrateOperation):
    """What encrypting and decrypting share: the column, its companions and the options."""

    def __init__(
        self,
        table_name: str,
        column_name: str,
        *,
        schema: str | None = None,
        blind_index: str | None = None,
        normalize: str | Sequence[str] | None = None,
        index_name: str | None = None,
        bind_to: str | None = None,
        keyring: KeyringProvider | str | None = None,
        history_table: str | None = None,
        audit_log: str | None = None,
        nullable: bool = True,
        batch_size: int = 1000,
        lock_timeout: str = "2s",
        retries: int = 10,
        quiet_for: float = 0.0,
        max_wait: float = 600.0,
    ) -> None:
        self.table_name, self.column_name, self.schema = table_name, column_name, schema
        self.blind_index, self.normalize, self.bind_to = blind_index, normalize, bind_to
        self.index_name = index_name or (ident(f"ix_{table_name}", blind_index) if blind_index else None)
        self.keyring, self.history_table, self.audit_log = keyring, history_table, audit_log
        self.nullable, self.batch_size = nullable, batch_size
        self.lock_timeout, self.retries = check_lock_timeout(type(self).__name__, lock_timeout), retries
        self.quiet_for, self.max_wait = quiet_for, max_wait
        if normalize is not None and blind_index is None:
            raise ConfigurationError("normalize= shapes the blind index: name blind_index= too.")

    def options(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "schema", "blind_index", "normalize", "index_name", "bind_to", "keyring", "history_table",
            "audit_log", "nullable", "batch_size", "lock_timeout", "retries", "quiet_for", "max_wait")}

    def value_type(self) -> EncryptedString:
        """The column's type, attached to its place (the envelopes' associated data)."""
        provider = _resolve_keyring(self.keyring)
        type_ = EncryptedString(provider, blind_index=self.blind_index is not None,
                                normalize=self.normalize, blind_index_name=self.blind_index, bind_to=self.bind_to)
        if type_._keys.per_context:
            raise ConfigurationError(
                f"{self.table_name}.{self.column_name}: a per-tenant keyring provider cannot encrypt "
                "in a migration, which walks every tenant's rows; encrypt per tenant with "
                "sa_patterns.backfill inside each tenant_scope() instead.")
        Table(self.table_name, MetaData(), Column(self.column_name, type_))
        return type_


@Operations.register_operation("encrypt_column")
class EncryptColumnOp(_ColumnOp):
    """Encrypt a populated text column in place without stalling its writers (the module
    docstring gives the steps and their locks)."""

    @classmethod
    def encrypt_column(cls, operations: Operations, table_name: str, column_name: str, **kw: Any) -> None:
        """``blind_index``: the companion column's name (``email_bidx``), with ``normalize`` and
        ``index_name`` as the model declares them; ``keyring``: a Keyring, a zero-argument
        callable, or ``"package.module:NAME"`` (default: ``SA_PATTERNS_KEYS`` from the
        environment, as the type's); ``bind_to`` as the type's. ``history_table`` (a
        ``Versioned`` table's ``<table>_history``) and ``audit_log`` (``"audit_log"`` or
        ``"schema.audit_log"``) have their copies encrypted too. ``nullable=False``: the column
        ends NOT NULL. ``quiet_for``: the swap waits until no plaintext was written for that many
        seconds (the old application retired), at most ``max_wait``."""
        operations.invoke(cls(table_name, column_name, **kw))

    def reverse(self) -> DecryptColumnOp:
        return DecryptColumnOp(self.table_name, self.column_name, **self.options())

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("encrypt_column", self.schema, self.table_name, self.column_name)


@Operations.register_operation("decrypt_column")
class DecryptColumnOp(_ColumnOp):
    """The downgrade of :class:`EncryptColumnOp`: the column becomes text again, by the same
    steps in reverse (a text column beside it, a batched decryption, the swap); the history's
    copies are decrypted too. **Decrypting puts plaintext back** in the table and the history;
    the audit log's entries stay ciphertext (readable with the keyring)."""

    @classmethod
    def decrypt_column(cls, operations: Operations, table_name: str, column_name: str, **kw: Any) -> None:
        """The same arguments as the ``encrypt_column`` call it undoes."""
        operations.invoke(cls(table_name, column_name, **kw))

    def reverse(self) -> EncryptColumnOp:
        return EncryptColumnOp(self.table_name, self.column_name, **self.options())

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("decrypt_column", self.schema, self.table_name, self.column_name)


# -- running the steps -------------------------------------------------------------------------

_HEX_ENVELOPE = "\\x01"


class _Steps(OnlineSteps):
    """One column's conversion: ``encrypt`` (text to bytea) or its reverse."""

    def __init__(self, operations: Operations, op: _ColumnOp, encrypt: bool) -> None:
        what = "encrypting" if encrypt else "decrypting"
        super().__init__(operations, f"{what} {op.table_name}.{op.column_name}",
                         lock_timeout=op.lock_timeout, retries=op.retries)
        self.op, self.encrypt = op, encrypt
        self.col = op.column_name
        self.new = ident(op.column_name, "sa_enc" if encrypt else "sa_plain")
        self.table = qualified(op.schema, op.table_name)
        self.history = qualified(op.schema, op.history_table) if op.history_table else None
        self.function = qualified(op.schema, ident(op.table_name, f"{op.column_name}_sa_mark"))
        self.trigger = quote(ident(op.table_name, f"{op.column_name}_sa_mark"))
        self.check = quote(ident(f"ck_{op.table_name}", f"{op.column_name}_sealed"))
        self.not_null_check = quote(ident(f"ck_{op.table_name}", f"{op.column_name}_nn"))
        self.new_type = "bytea" if encrypt else "text"
        self.plaintexts = 0  # plaintext writes seen by the last catch-up pass (encrypting)
        self._type: EncryptedString | None = None

    @property
    def type_(self) -> EncryptedString:
        if self._type is None:
            self._type = self.op.value_type()
        return self._type

    # -- the state, read from the catalog
    def column_type(self, table: str, column: str) -> str | None:
        if self.offline:
            return None
        return self.bind.execute(text(
            "SELECT format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute "
            "WHERE attrelid = to_regclass(:t) AND attname = :c AND NOT attisdropped"
        ), {"t": table, "c": column}).scalar()

    def swapped(self) -> bool:
        """Whether the column already has its new type (and no staging column is left)."""
        kind = self.column_type(self.table, self.col)
        done = kind == "bytea" if self.encrypt else kind is not None and kind != "bytea"
        return done and self.column_type(self.table, self.new) is None

    # -- 1. the staging columns and the trigger
    def prepare(self) -> None:
        bidx = self.op.blind_index
        statements = [f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {quote(self.new)} {self.new_type}"]
        if self.encrypt and bidx:
            statements.append(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {quote(bidx)} bytea")
        if self.history:
            statements.append(f"ALTER TABLE {self.history} ADD COLUMN IF NOT EXISTS {quote(self.new)} {self.new_type}")
            if self.encrypt and bidx:
                statements.append(f"ALTER TABLE {self.history} ADD COLUMN IF NOT EXISTS {quote(bidx)} bytea")
        c, n = quote(self.col), quote(self.new)
        keep_index = (
            f"\n    IF TG_OP = 'UPDATE' AND NEW.{quote(bidx)} IS NOT DISTINCT FROM OLD.{quote(bidx)} THEN"
            f"\n      NEW.{quote(bidx)} := NULL;\n    END IF;" if bidx and self.encrypt else ""
        )
        statements += [
            f"CREATE OR REPLACE FUNCTION {self.function}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$sa_patterns$\nBEGIN\n  -- sa_patterns: {self.what}: a row whose {self.col} is written meanwhile "
            f"is done again\n  IF TG_OP = 'INSERT' OR NEW.{c} IS DISTINCT FROM OLD.{c} THEN\n"
            f"    NEW.{n} := NULL;{keep_index}\n  END IF;\n  RETURN NEW;\nEND\n$sa_patterns$",
            f"CREATE OR REPLACE TRIGGER {self.trigger} BEFORE INSERT OR UPDATE ON {self.table} "
            f"FOR EACH ROW EXECUTE FUNCTION {self.function}()",
        ]
        self.brief(*statements)

    # -- 2. and 4. the conversion of the rows
    def backfill(self, table_name: str) -> Backfill:
        live = Table(table_name, MetaData(), schema=self.op.schema, autoload_with=self.bind)
        where = and_(live.c[self.col].is_not(None), live.c[self.new].is_(None))

        def action(conn: Connection, batch: Batch) -> int:
            return self.convert_rows(conn, live, and_(batch.condition, where))

        verb = "encrypt" if self.encrypt else "decrypt"
        return Backfill(f"{table_name}.{self.col}.{verb}", live, action=action, where=where)

    def convert_rows(self, conn: Connection, live: Table, condition: Any) -> int:
        """Convert the rows ``condition`` selects in one ``UPDATE ... FROM unnest(...)``: one
        statement per batch, so the table's statement triggers (audit, history) run once."""
        key = list(live.primary_key.columns)
        wanted = self.op.blind_index if self.encrypt else None
        bidx = wanted if wanted and wanted in live.c else None
        read = [live.c[self.col]] + ([live.c[bidx]] if bidx else [])
        # locked as read: a row that matched only after the batch's own locking select (a write
        # committed in between cleared its ciphertext) would otherwise be read unlocked, written
        # again by the old code, then given the ciphertext of the value read: a lost write
        rows = conn.execute(
            select(*key, *read).where(condition).with_for_update(key_share=True, of=live)
        ).mappings().all()
        if not rows:
            return 0
        new = self.convert(rows, bidx)
        names = list(new[0])
        arrays = {f"_k{i}": [r[c.name] for r in rows] for i, c in enumerate(key)}
        arrays.update({f"_v{j}": [v[n] for v in new] for j, n in enumerate(names)})
        types = {f"_k{i}": c.type for i, c in enumerate(key)}
        types.update({f"_v{j}": live.c[n].type for j, n in enumerate(names)})
        source = select(*[
            func.unnest(bindparam(name, value=arrays[name], type_=ARRAY(types[name]))).label(name) for name in arrays
        ]).subquery("sa_v")
        conn.execute(
            update(live).where(*[c == source.c[f"_k{i}"] for i, c in enumerate(key)])
            .values({n: source.c[f"_v{j}"] for j, n in enumerate(names)})
        )
        return len(rows)

    def recover(self, value: Any) -> str:
        """The plaintext of a value read from the column before the swap."""
        if isinstance(value, str):
            opened = self.type_.opened_text(value)
            if opened is None:
                self.plaintexts += 1
                return value
            return opened
        result = self.type_.process_result_value(bytes(value), None)  # type: ignore[arg-type]
        assert result is not None
        return result

    def convert(self, rows: Sequence[RowMapping], bidx: str | None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for row in rows:
            plain = self.recover(row[self.col])
            if not self.encrypt:
                out.append({self.new: plain})
                continue
            values: dict[str, Any] = {self.new: self.type_.seal(self.type_._dumps(plain))}
            if bidx:
                values[bidx] = self.type_.blind_index_value(plain)
            out.append(values)
        return out

    def run_fill(self, *, restart: bool) -> None:
        if self.offline:
            verb = "encrypt" if self.encrypt else "decrypt"
            for name in filter(None, (self.op.table_name, self.op.history_table)):
                self.emit(
                    f"-- sa_patterns: {verb} {qualified(self.op.schema, name)}.{self.col} into {self.new} "
                    f"with the keyring, in batches of {self.op.batch_size} that commit (online only)"
                )
            return
        for name in filter(None, (self.op.table_name, self.op.history_table)):
            run_backfill(self.bind, self.backfill(name), batch_size=self.op.batch_size, restart=restart)

    def catch_up(self) -> None:
        """Passes over the rows written since, until no plaintext arrived for ``quiet_for``."""
        if self.offline:
            return
        started = quiet_since = time.monotonic()
        while True:
            self.plaintexts = 0
            self.run_fill(restart=True)
            now = time.monotonic()
            if self.plaintexts and self.encrypt:
                quiet_since = now
            if now - quiet_since >= self.op.quiet_for:
                return
            if now - started > self.op.max_wait:
                raise BackfillError(
                    f"{self.what}: plaintext was still being written after {self.op.max_wait:.0f} s "
                    f"(quiet_for={self.op.quiet_for}): retire the application that writes "
                    f"{self.col} as text, then run the upgrade again: it resumes."
                )
            time.sleep(min(0.2, self.op.quiet_for))

    # -- 3. the blind index's index
    def create_index(self) -> None:
        if not (self.encrypt and self.op.blind_index and self.op.index_name):
            return
        index = qualified(self.op.schema, self.op.index_name)
        if self.index_valid(index):
            return
        with self.unlimited_wait():
            self.emit(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote(self.op.index_name)} "
                      f"ON {self.table} ({quote(self.op.blind_index)})")

    # -- 5. the swap
    def swap_sql(self) -> list[str]:
        c, n = quote(self.col), quote(self.new)
        statements = [f"DROP TRIGGER IF EXISTS {self.trigger} ON {self.table}", f"DROP FUNCTION IF EXISTS {self.function}()"]
        if not self.encrypt:
            statements.append(f"ALTER TABLE {self.table} DROP CONSTRAINT IF EXISTS {self.check}")
        for table in filter(None, (self.table, self.history)):
            statements += [f"ALTER TABLE {table} DROP COLUMN {c}", f"ALTER TABLE {table} RENAME COLUMN {n} TO {c}"]
        if self.encrypt:
            statements.append(
                f"ALTER TABLE {self.table} ADD CONSTRAINT {self.check} CHECK ({envelope_check(self.col)}) NOT VALID")
        if not self.op.nullable:
            statements.append(
                f"ALTER TABLE {self.table} ADD CONSTRAINT {self.not_null_check} CHECK ({c} IS NOT NULL) NOT VALID")
        return statements

    def swap(self) -> None:
        """The last rows converted and the columns swapped, in one transaction under
        lock_timeout (retried): the old application's last writes are not lost."""
        if self.offline:
            self.emit(f"-- sa_patterns: the rows of {self.table} written since, converted under the lock below")
            self.brief(*self.lock_sql(), *self.swap_sql())
            return
        # reflected before the lock: the lock is held for the rows' conversion and the DDL only
        specs = [self.backfill(name) for name in filter(None, (self.op.table_name, self.op.history_table))]
        for attempt in range(self.retries + 1):
            self.bind.exec_driver_sql("BEGIN")
            try:
                self.bind.exec_driver_sql(f"SET LOCAL lock_timeout = {self.lock_timeout!r}")
                for statement in self.lock_sql():
                    self.bind.exec_driver_sql(statement)
                for spec in specs:
                    self.convert_rows(self.bind, spec.table, spec.where)
                for statement in self.swap_sql():
                    self.bind.exec_driver_sql(statement)
                self.bind.exec_driver_sql("COMMIT")
                return
            except DBAPIError as exc:
                self.bind.exec_driver_sql("ROLLBACK")
                if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                    raise
                if attempt == self.retries:
                    raise BackfillError(
                        f"{self.what}: the swap could not take its lock within lock_timeout="
                        f"{self.lock_timeout} in {attempt + 1} tries (a long transaction holds the "
                        "table: see pg_stat_activity). Run the upgrade again: it resumes."
                    ) from exc
                time.sleep(min(0.2 * 2**attempt, 10.0))
            except BaseException:
                self.bind.exec_driver_sql("ROLLBACK")
                raise

    def lock_sql(self) -> list[str]:
        tables = ", ".join(filter(None, (self.table, self.history)))
        return [f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"]

    # -- 6. constraints validated, NOT NULL
    def finish_constraints(self) -> None:
        if self.encrypt:
            self.validate(self.check)
        if not self.op.nullable:
            self.validate(self.not_null_check)
            self.brief(f"ALTER TABLE {self.table} ALTER COLUMN {quote(self.col)} SET NOT NULL",
                       f"ALTER TABLE {self.table} DROP CONSTRAINT IF EXISTS {self.not_null_check}")

    def validate(self, constraint: str) -> None:
        if not self.offline and not self.bind.execute(text(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = to_regclass(:t) "
            "AND conname = :c AND NOT convalidated)"), {"t": self.table, "c": constraint.strip('"')}).scalar():
            return
        # VALIDATE takes SHARE UPDATE EXCLUSIVE: reads and writes go on while it scans
        self.brief(f"ALTER TABLE {self.table} VALIDATE CONSTRAINT {constraint}")

    # -- 7. the audit log
    def rewrite_audit(self) -> None:
        if not (self.encrypt and self.op.audit_log):
            return
        schema, _, name = self.op.audit_log.rpartition(".")
        log_name = qualified(schema or None, name)
        if self.offline:
            self.emit(f"-- sa_patterns: {log_name} entries of {self.table}: each plaintext {self.col} in "
                      "old_row/new_row replaced by its envelope, in batches that commit (online only)")
            return
        logged_as = self.bind.execute(text(
            "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.oid = to_regclass(:t)"), {"t": self.table}).scalar_one()
        log = Table(name, MetaData(), schema=schema or None, autoload_with=self.bind)

        def plaintext_in(side: Column[Any]) -> Any:
            value = side.op("->>")(literal(self.col))
            return and_(side.op("?")(literal(self.col)), func.jsonb_typeof(side.op("->")(literal(self.col))) == "string",
                        func.left(value, 4) != _HEX_ENVELOPE)

        def action(conn: Connection, batch: Batch) -> int:
            rows = conn.execute(select(log.c.id, log.c.old_row, log.c.new_row).where(batch.condition)).all()
            params = [{"_id": r.id, "_old": self.sealed_entry(r.old_row), "_new": self.sealed_entry(r.new_row)}
                      for r in rows]
            if params:
                conn.execute(update(log).where(log.c.id == bindparam("_id")).values(
                    old_row=bindparam("_old", type_=JSONB), new_row=bindparam("_new", type_=JSONB)), params)
            return len(params)

        spec = Backfill(
            f"{self.op.table_name}.{self.col}.audit", log, action=action,
            where=and_(log.c.table_name == logged_as, or_(plaintext_in(log.c.old_row), plaintext_in(log.c.new_row))),
        )
        # The log refuses UPDATE (its append-only guard). DISABLE TRIGGER would take a lock that
        # stops every audited writer's entry; instead the guard's function is replaced (no table
        # lock) by one that lets this backend only, by its pid, update, and restored after.
        guard_fn = qualified(schema or None, ident(name, "append_only"))
        driver = self.bind.connection.driver_connection
        assert driver is not None
        original = self.bind.execute(text("SELECT pg_get_functiondef(to_regprocedure(:f))"),
                                     {"f": f"{guard_fn}()"}).scalar_one()
        pid = int(self.bind.execute(text("SELECT pg_backend_pid()")).scalar_one())
        driver.execute(  # sent as is (no parameters: the body's "%" are plpgsql's)
            f"CREATE OR REPLACE FUNCTION {guard_fn}() RETURNS trigger LANGUAGE plpgsql AS $sa_patterns$\n"
            f"BEGIN\n  IF TG_OP = 'UPDATE' AND pg_backend_pid() = {pid} THEN  -- sa_patterns: {self.what}\n"
            "    RETURN NULL;\n  END IF;\n"
            "  RAISE EXCEPTION '% is append-only: % is refused', TG_TABLE_NAME, TG_OP\n"
            "    USING ERRCODE = 'insufficient_privilege';\nEND\n$sa_patterns$"
        )
        try:
            run_backfill(self.bind, spec, batch_size=self.op.batch_size)
        finally:
            driver.execute(original)

    def sealed_entry(self, entry: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        if entry is None:
            return None
        value = entry.get(self.col)
        if not isinstance(value, str) or value.startswith(_HEX_ENVELOPE):
            return entry
        sealed = self.type_.seal(self.type_._dumps(value))
        return {**entry, self.col: "\\x" + sealed.hex()}

    def forget_all(self) -> None:
        verb = "encrypt" if self.encrypt else "decrypt"
        for name in filter(None, (self.op.table_name, self.op.history_table)):
            self.forget(f"{name}.{self.col}.{verb}")
        self.forget(f"{self.op.table_name}.{self.col}.audit")


@Operations.implementation_for(EncryptColumnOp)
def _encrypt_column(operations: Operations, operation: EncryptColumnOp) -> None:
    _run(_Steps(operations, operation, encrypt=True))


@Operations.implementation_for(DecryptColumnOp)
def _decrypt_column(operations: Operations, operation: DecryptColumnOp) -> None:
    steps = _Steps(operations, operation, encrypt=False)
    _run(steps)
    op = operation
    with operations.get_context().autocommit_block():
        if op.index_name:
            with steps.unlimited_wait():
                steps.emit(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified(op.schema, op.index_name)}")
        if op.blind_index:
            steps.brief(*[f"ALTER TABLE {t} DROP COLUMN IF EXISTS {quote(op.blind_index)}"
                          for t in filter(None, (steps.table, steps.history))])


def _run(steps: _Steps) -> None:
    with steps.operations.get_context().autocommit_block():
        if not steps.swapped():
            if not steps.offline:
                steps.type_.check()  # a missing key fails here, before any row
            fresh = steps.column_type(steps.table, steps.new) is None
            steps.prepare()
            steps.run_fill(restart=fresh)
            steps.create_index()
            steps.catch_up()
            steps.swap()
        elif not steps.offline:
            steps.create_index()  # a run stopped after the swap: an INVALID leftover is rebuilt
        steps.finish_constraints()
        steps.rewrite_audit()
        steps.forget_all()


# -- rendering ---------------------------------------------------------------------------------

_DEFAULTS = {"schema": None, "blind_index": None, "normalize": None, "index_name": None, "bind_to": None,
             "keyring": None, "history_table": None, "audit_log": None, "nullable": True, "batch_size": 1000,
             "lock_timeout": "2s", "retries": 10, "quiet_for": 0.0, "max_wait": 600.0}


def _call(name: str, op: _ColumnOp) -> str:
    args = [repr(op.table_name), repr(op.column_name)]
    options = op.options()
    if op.blind_index and op.index_name == ident(f"ix_{op.table_name}", op.blind_index):
        options["index_name"] = None
    for key, default in _DEFAULTS.items():
        value = options[key]
        if value != default:
            args.append(f"{key}={tuple(value) if isinstance(value, list) else value!r}")
    return f"op.{name}({', '.join(args)})"


@renderers.dispatch_for(EncryptColumnOp)
def _render_encrypt(autogen_context: AutogenContext, op: EncryptColumnOp) -> str:
    return _call("encrypt_column", op)


@renderers.dispatch_for(DecryptColumnOp)
def _render_decrypt(autogen_context: AutogenContext, op: DecryptColumnOp) -> str:
    return _call("decrypt_column", op)


# -- autogenerate: a text column whose model type becomes EncryptedString -----------------------


def keyring_reference(provider: KeyringProvider | None) -> str | None:
    """``"package.module:NAME"`` for a provider a migration can import (a module-level Keyring or
    function), None for the environment's keyring; ConfigurationError when it has no such name."""
    if provider is None:
        return None
    module = getattr(provider, "__module__", None)
    qualname = getattr(provider, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        return f"{module}:{qualname}"
    for module_name, obj in list(sys.modules.items()):
        for attr, value in list(getattr(obj, "__dict__", {}).items()):
            if value is provider and not module_name.startswith(("sa_patterns", "__main__")):
                return f"{module_name}:{attr}"
    raise ConfigurationError(
        f"the keyring of an encrypted column ({provider!r}) has no importable name, and the "
        "migration that encrypts the existing values must reach it: make it a module-level Keyring "
        "or function, or pass keyring='package.module:NAME' to op.encrypt_column by hand.")


def _audited(table: Table) -> str | None:
    from ..audit import _LOG_KEY
    from ..schema.objects import Trigger
    from ..schema.registry import registered

    log = table.metadata.info.get(_LOG_KEY)
    if log is None or not any(isinstance(e, Trigger) and e.table == table.name and e.schema == table.schema
                              and e.name == ident(table.name, "audit_ins") for e in registered(table.metadata)):
        return None
    return f"{log.schema}.{log.name}" if log.schema else str(log.name)


def _history_of(table: Table) -> Table | None:
    from ..versioning import _HISTORY_KEY

    found: Table | None = table.metadata.info.get(_HISTORY_KEY, {}).get(table.key)
    return found


@run_last
def _adopt_encrypted_columns(autogen_context: AutogenContext, upgrade_ops: Any, schemas: Any) -> PriorityDispatchResult:
    """``alter_column(type_=EncryptedString())`` of a text column (and the blind index column,
    its index, the history's copies of both) become ``op.encrypt_column`` first in the revision:
    it commits what precedes it, and the functions autogenerate replaces after it (audit,
    history) must find the new columns."""
    tables = metadata_tables(autogen_context)
    containers = {(c.schema or "", c.table_name): c for c in upgrade_ops.ops if isinstance(c, alembic_ops.ModifyTableOps)}
    first: list[MigrateOperation] = []
    for (schema, name), container in containers.items():
        table = tables.get((schema, name))
        if table is None:
            continue
        for alter in [o for o in container.ops if isinstance(o, alembic_ops.AlterColumnOp)]:
            type_ = encrypted_type(alter.modify_type)
            if not isinstance(type_, EncryptedString) or not isinstance(alter.existing_type, String):
                continue
            col = alter.column_name
            bidx = type_.blind_index_name if type_.blind_index else None
            drop = {id(alter)}
            index_name = None
            for o in container.ops:
                if bidx and isinstance(o, alembic_ops.AddColumnOp) and o.column.name == bidx:
                    drop.add(id(o))
                if bidx and isinstance(o, alembic_ops.CreateIndexOp) and [
                        getattr(c, "name", c) for c in o.columns] == [bidx]:
                    drop.add(id(o))
                    index_name = str(o.index_name)
            container.ops = [o for o in container.ops if id(o) not in drop]
            history = _history_of(table)
            if history is not None and (h := containers.get((history.schema or "", history.name))) is not None:
                h.ops = [o for o in h.ops if not (
                    (isinstance(o, alembic_ops.AlterColumnOp) and o.column_name == col)
                    or (isinstance(o, alembic_ops.AddColumnOp) and o.column.name == bidx))]
            normalize = type_.normalize
            if callable(normalize):
                raise ConfigurationError(
                    f"{name}.{col}: normalize= is a function, which a migration cannot name; use the "
                    "named steps (normalize=('strip', 'lower')) or write op.encrypt_column by hand.")
            first.append(EncryptColumnOp(
                name, col, schema=schema or None, blind_index=bidx,
                normalize=list(normalize) if normalize else None, index_name=index_name,
                bind_to=type_.bind_to, keyring=keyring_reference(type_._keys.provider),
                history_table=None if history is None else history.name, audit_log=_audited(table),
                nullable=alter.existing_nullable is not False if alter.modify_nullable is None else bool(alter.modify_nullable),
            ))
    if first:
        upgrade_ops.ops[:] = [*first, *(o for o in upgrade_ops.ops if not (
            isinstance(o, alembic_ops.ModifyTableOps) and not o.ops))]
    return PriorityDispatchResult.CONTINUE

