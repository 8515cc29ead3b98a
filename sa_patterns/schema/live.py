"""The live definitions of our objects against what the models declare: the database is the wall.

:func:`~sa_patterns.schema.catalog.diff` compares the models with the ``sa_patterns:`` comment
each object carries, which says what the toolkit *created*. A hand edit that keeps the comment
(``CREATE OR REPLACE FUNCTION``, ``ALTER TABLE ... DISABLE TRIGGER``, ``ALTER POLICY``, a policy
added beside ours, ``ALTER VIEW ... SET (security_invoker = false)``, a dropped index) is
invisible there. :func:`drifts` reads what PostgreSQL really holds and lists each difference
as a :class:`Drift`: what is wrong, in a sentence, and the object operation that repairs it.

Nothing is normalised by us but a function body's layout (:func:`~.sql_text.layout_free`:
PostgreSQL keeps a body as given, and one laid out by an older release is the same code). Each
declared object is created again, under a throwaway name, inside a SAVEPOINT that is always
rolled back: functions in ``pg_temp``, triggers and policies on ``CREATE TEMP TABLE probe (LIKE
<table>)``, matview indexes on a temporary copy of the view's columns. The probes and the live objects are then read back by the same catalog queries and
compared field by field (``pg_get_expr`` of policy expressions, ``pg_proc`` columns, ``tgtype``
...). That needs only the ``TEMP`` privilege, so the doctor's app-role connection can do it, and
it leaves nothing behind. Every read is one query for all objects of a kind.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import DDL, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .catalog import Diff
from .objects import (
    Entity,
    Function,
    MaterializedView,
    Policy,
    RowLevelSecurity,
    Trigger,
    View,
    qualified,
    quote,
)
from .sql_text import layout_free

__all__ = ["Drift", "drifts"]

Action = Literal["create", "replace", "drop", "none"]


@dataclass(frozen=True)
class Drift:
    """One way the live database differs from the models.

    ``action`` says how autogenerate repairs it: ``replace`` turns ``old`` (usually the declared
    object itself: a re-assertion) into ``entity``; ``create`` creates ``entity`` (row-level
    security switched off); ``drop`` removes ``entity``, an object the models do not declare;
    ``none`` is a difference that could not be checked (the doctor reports it, autogenerate
    writes nothing).
    """

    entity: Entity
    subject: str
    problem: str
    action: Action
    old: Entity | None = None
    fix: str = ""

    def what(self) -> str:
        """``<object>: <what is wrong>`` (the comment above its repair in a migration)."""
        return f"{self.subject}: {self.problem}"

    def message(self) -> str:
        """``<object>: <what is wrong>; <how to fix it>`` (a doctor finding)."""
        return f"{self.what()}; {self.fix}" if self.fix else self.what()


_AUTOGENERATE = "autogenerate a migration and apply it"
_PROBE = "_sa_patterns_probe"
_STUB = f"pg_temp.{_PROBE}_trigger()"
_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}
_WHEN = re.compile(r" WHEN \((.*)\) EXECUTE (?:FUNCTION|PROCEDURE) ", re.DOTALL)
_IDENT = r'(?:"(?:[^"]|"")+"|[^\s."(]+)'
_CALL = re.compile(rf"^\s*({_IDENT}(?:\.{_IDENT})?)\s*(\(.*\))\s*$", re.DOTALL)
_INDEX = re.compile(
    rf"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?{_IDENT}\s+"
    rf"ON\s+(?:ONLY\s+)?{_IDENT}(?:\.{_IDENT})?(.*)$",
    re.IGNORECASE | re.DOTALL,
)
_TRUE = {"true", "on", "yes", "1", "t", "y"}

_RELATIONS = text(
    "SELECT x.i, pg_catalog.to_regclass(x.name)::oid, c.relkind "
    "FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS x(name, i) "
    "LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(x.name)"
)
_PROCEDURES = text(
    "SELECT x.i, pg_catalog.to_regprocedure(x.sig)::oid "
    "FROM unnest(CAST(:sigs AS text[])) WITH ORDINALITY AS x(sig, i)"
)
_FUNCTIONS = text(
    "SELECT p.oid, p.prosrc, p.prosecdef, p.proconfig, l.lanname, "
    "pg_catalog.pg_get_function_result(p.oid), p.provolatile, p.proisstrict, p.proleakproof, "
    "p.proparallel FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang "
    "WHERE p.oid = ANY (CAST(:oids AS oid[]))"
)
# Parent triggers only; a partition's clone (tgparentid) that is disabled counts as disabled.
_TRIGGERS = text(
    """
    WITH RECURSIVE clones(root, oid, enabled) AS (
        SELECT t.oid, t.oid, t.tgenabled FROM pg_catalog.pg_trigger t
        WHERE t.tgrelid = ANY (CAST(:oids AS oid[])) AND t.tgparentid = 0
        UNION ALL
        SELECT c.root, k.oid, k.tgenabled FROM clones c
        JOIN pg_catalog.pg_trigger k ON k.tgparentid = c.oid
    )
    SELECT t.tgrelid, t.tgname, t.tgenabled, t.tgtype, t.tgfoid, t.tgfoid::regprocedure::text,
           t.tgargs, ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                           WHERE a.attrelid = t.tgrelid AND a.attnum = ANY (t.tgattr::int2[])
                           ORDER BY a.attname),
           t.tgoldtable, t.tgnewtable, pg_catalog.pg_get_triggerdef(t.oid),
           (SELECT count(*) FROM clones c
            WHERE c.root = t.oid AND c.oid <> t.oid AND c.enabled IN ('D', 'R'))
    FROM pg_catalog.pg_trigger t
    WHERE t.tgrelid = ANY (CAST(:oids AS oid[])) AND NOT t.tgisinternal AND t.tgparentid = 0
    """
)
_POLICIES = text(
    "SELECT p.polrelid, p.polname, p.polcmd, p.polpermissive, "
    "ARRAY(SELECT r FROM unnest(p.polroles) AS r ORDER BY r), "
    "ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(r)::text END "
    "      FROM unnest(p.polroles) AS r ORDER BY 1), "
    "pg_catalog.pg_get_expr(p.polqual, p.polrelid), pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) "
    "FROM pg_catalog.pg_policy p WHERE p.polrelid = ANY (CAST(:oids AS oid[]))"
)
_OPTIONS = text(
    "SELECT c.oid, c.reloptions FROM pg_catalog.pg_class c WHERE c.oid = ANY (CAST(:oids AS oid[]))"
)
_INDEXES = text(
    "SELECT x.indrelid, i.relname, x.indisunique, pg_catalog.pg_get_indexdef(x.indexrelid) "
    "FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid "
    "WHERE x.indrelid = ANY (CAST(:oids AS oid[]))"
)


# --------------------------------------------------------------------------------------------
# the probe: every declared object created again under a throwaway name, then rolled back


@dataclass
class _Probe:
    """Statements creating throwaway copies of declared objects, in units that fail alone."""

    units: list[tuple[str, list[str], str | None]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, unit: str, statements: list[str], needs: str | None = None) -> None:
        """``needs``: the unit this one builds on (a table copy), whose failure is its own."""
        self.units.append((unit, statements, needs))

    def run(self, connection: Connection) -> None:
        """Create every unit (inside the caller's SAVEPOINT); a unit that fails is recorded in
        ``failed`` and left out, the others are kept."""
        if not self.units:
            return
        everything = [s for _, statements, _ in self.units for s in statements]
        batch = connection.begin_nested()
        try:
            _execute(connection, everything)  # one round trip when all goes well
        except DBAPIError:
            batch.rollback()
        else:
            batch.commit()
            return
        for unit, statements, needs in self.units:
            if needs is not None and needs in self.failed:
                self.failed[unit] = self.failed[needs]
                continue
            one = connection.begin_nested()
            try:
                _execute(connection, statements)
            except DBAPIError as exc:
                one.rollback()
                self.failed[unit] = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            else:
                one.commit()


def _execute(connection: Connection, statements: list[str]) -> None:
    if statements:
        # DDL %-formats its text: a literal "%" (plpgsql RAISE '%') is passed doubled.
        connection.execute(DDL(";\n".join(statements).replace("%", "%%")))  # type: ignore[no-untyped-call]


def _probe_function(entity: Function, name: str) -> Function:
    """``entity`` as a plain function named ``pg_temp.<name>`` (a subclass's extra statements,
    such as a maintenance function's first run, are left out)."""
    values = {f.name: getattr(entity, f.name) for f in dataclasses.fields(Function)}
    return Function(**{**values, "schema": "pg_temp", "name": name})


def _signature(schema: str | None, name: str, identity: str) -> str:
    return f"{qualified(schema, name)}({identity})"


# --------------------------------------------------------------------------------------------
# subjects and fixes


def _on(entity: Trigger | Policy) -> str:
    return f"{quote(entity.name)} on {qualified(entity.schema, entity.table)}"


def _subject(entity: Entity) -> str:
    if isinstance(entity, Function):
        return f"function {_signature(entity.schema, entity.name, entity.identity)}"
    if isinstance(entity, Trigger):
        return f"trigger {_on(entity)}"
    if isinstance(entity, Policy):
        return f"policy {_on(entity)}"
    if isinstance(entity, MaterializedView):
        return f"materialized view {qualified(entity.schema, entity.name)}"
    if isinstance(entity, View):
        return f"view {qualified(entity.schema, entity.name)}"
    return entity.describe()


def _differs(aspects: list[str]) -> str:
    return "differs from the models in " + ", ".join(aspects)


# --------------------------------------------------------------------------------------------
# the check


def drifts(
    connection: Connection,
    wanted: Sequence[Entity],
    changes: Diff | None = None,
    policed: Iterable[tuple[str | None, str]] = (),
) -> list[Drift]:
    """How the live database differs from ``wanted``, beyond what ``changes`` (the comment
    diff, whose creates, replaces and drops are left to it) already repairs.

    ``policed`` names tables (schema, name) whose policies must be exactly the declared ones,
    besides every table with a declared policy or row-level security: a policy there that no
    model declares is a drift, which autogenerate drops.

    A trigger or policy the comment diff would create but that exists without our comment (made
    again by hand) comes back as a ``replace`` drift: a plain ``CREATE`` would fail on it. So
    does row-level security the comment diff would enable or force on a table whose declared
    policies are all in place: switched off by hand, not a change of the models.
    """
    changes = changes or Diff([], [], [])
    found = _security_drifts(changes, wanted)
    pending = {e.key() for e in changes.create} | {n.key() for n, _ in changes.replace}
    checked = [e for e in wanted if e.key() not in pending]
    unstamped = [e for e in changes.create if isinstance(e, Trigger | Policy)]
    outer = connection.begin_nested()
    try:
        connection.execute(text("SET LOCAL check_function_bodies = off"))
        found += _Comparison(connection, wanted, checked, unstamped, changes.drop, policed).run()
    finally:
        outer.rollback()  # every probe, and the setting, go with it
    return found


def _security_drifts(changes: Diff, wanted: Sequence[Entity]) -> list[Drift]:
    """Row-level security state carries no comment: the comment diff finds it off or not
    forced, and it is a hand edit when the table's declared policies are all in place (a newly
    declared ``__rls__`` creates its policies in the same migration)."""

    def table(entity: RowLevelSecurity | Policy) -> tuple[str, str]:
        return (entity.schema or "", entity.table)

    creating = {table(e) for e in changes.create if isinstance(e, Policy)}
    settled = {table(e) for e in wanted if isinstance(e, Policy)} - creating
    found = []
    for entity in changes.create:
        if isinstance(entity, RowLevelSecurity) and table(entity) in settled:
            found.append(Drift(
                entity, entity.describe(),
                "is disabled (ALTER TABLE ... DISABLE ROW LEVEL SECURITY), so the table's policies are ignored",
                "create", fix=f"{_AUTOGENERATE} (it enables and forces it again)",
            ))
    for new, old in changes.replace:
        if (
            isinstance(new, RowLevelSecurity)
            and isinstance(old, RowLevelSecurity)
            and new.force
            and not old.force
            and table(new) in settled
        ):
            found.append(Drift(
                new, new.describe(),
                "is not FORCEd (ALTER TABLE ... NO FORCE ROW LEVEL SECURITY), so the table's owner skips every policy",
                "replace", old, fix=f"{_AUTOGENERATE} (it forces it again)",
            ))
    return found


Place = tuple[str, str]  # (schema, table) with the current schema filled in
Located = tuple[int, str] | None  # (oid, relkind) of a relation, None when there is none


class _Comparison:
    """One comparison: locate, probe, read back and compare each kind (a query per kind)."""

    def __init__(
        self,
        connection: Connection,
        wanted: Sequence[Entity],
        checked: Sequence[Entity],
        unstamped: Sequence[Entity],
        dropping: Sequence[Entity],
        policed: Iterable[tuple[str | None, str]],
    ) -> None:
        self.connection = connection
        self.default = str(connection.execute(text("SELECT current_schema()")).scalar_one())
        self.unstamped = {e.key() for e in unstamped}
        both = [*checked, *unstamped]
        self.functions = [e for e in checked if isinstance(e, Function)]
        self.triggers = [e for e in both if isinstance(e, Trigger)]
        self.policies = [e for e in both if isinstance(e, Policy)]
        self.views = [e for e in checked if isinstance(e, View)]
        self.matviews = [e for e in checked if isinstance(e, MaterializedView) and e.indexes]
        self.dropping = {
            (self.place(e.schema, e.table), e.name) for e in dropping if isinstance(e, Policy)
        }
        # Tables whose triggers or policies are compared, as the models spell them.
        self.tables: dict[Place, tuple[str | None, str]] = {}
        on_tables: list[Trigger | Policy] = [*self.triggers, *self.policies]
        for entity in on_tables:
            self.tables.setdefault(self.place(entity.schema, entity.table), (entity.schema, entity.table))
        self.policed = {self.place(s, t) for s, t in policed}
        # Every declared policy, including those the comment diff replaces: not "undeclared".
        self.declared: set[tuple[Place, str]] = set()
        for declared in wanted:
            if isinstance(declared, RowLevelSecurity | Policy):
                self.policed.add(self.place(declared.schema, declared.table))
            if isinstance(declared, Policy):
                self.declared.add((self.place(declared.schema, declared.table), declared.name))
        for schema, table in sorted(self.policed):
            self.tables.setdefault((schema, table), (schema, table))
        self.probe = _Probe()

    def place(self, schema: str | None, table: str) -> Place:
        return (schema or self.default, table)

    def run(self) -> list[Drift]:
        views = self.views + self.matviews
        located = _relations(
            self.connection,
            [qualified(s, t) for s, t in self.tables.values()]
            + [qualified(e.schema, e.name) for e in views],
        )
        self.table_oid: dict[Place, Located] = dict(zip(self.tables, located, strict=False))
        self.view_oid: dict[tuple[str, ...], Located] = {
            e.key(): located[len(self.tables) + i] for i, e in enumerate(views)
        }
        self._probe_tables()
        self._probe_functions()
        self._probe_matviews()
        self.probe.run(self.connection)
        copies = _relations(self.connection, [f"pg_temp.{n}" for n in self.copy_name.values()])
        self.copy_oid: dict[Place, Located] = dict(zip(self.copy_name, copies, strict=True))
        self.rel_oids = [
            located[0]
            for located in [*self.table_oid.values(), *self.copy_oid.values()]
            if located is not None
        ]
        return [
            *self._functions(),
            *self._triggers(),
            *self._policies(),
            *self._views(),
            *self._matviews(),
        ]

    # probes ---------------------------------------------------------------------------------
    def _probe_tables(self) -> None:
        """A temporary copy of each table (its columns), carrying the declared triggers (on a
        stand-in function: the real one is compared by oid) and policies."""
        self.copy_name: dict[Place, str] = {}
        self.copy_unit: dict[str, str] = {}  # copy -> its probe unit
        if self.triggers:
            self.probe.add("stub", [
                f"CREATE FUNCTION {_STUB} RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$"
            ])
        on_tables: list[Trigger | Policy] = [*self.triggers, *self.policies]
        carrying = {self.place(e.schema, e.table) for e in on_tables}
        for number, (key, (schema, table)) in enumerate(self.tables.items()):
            located = self.table_oid[key]
            if located is None or key not in carrying:
                continue
            name = self.copy_name[key] = f"{_PROBE}_{number}"
            source = qualified(schema, table)
            self.copy_unit[name] = f"table {source}"
            if located[1] == "v":  # INSTEAD OF triggers live on views
                view = f"CREATE TEMP VIEW {name} AS SELECT * FROM {source}"  # noqa: S608 (quoted names)
                self.probe.add(f"table {source}", [view])
            else:
                self.probe.add(f"table {source}", [f"CREATE TEMP TABLE {name} (LIKE {source})"])
        self.calls: dict[tuple[str, ...], str | None] = {}
        for trigger in self.triggers:
            copy_of = self.copy_name.get(self.place(trigger.schema, trigger.table))
            if copy_of is None:
                continue
            call = _CALL.match(trigger.function)
            self.calls[trigger.key()] = call.group(1) if call else None
            function = f"pg_temp.{_PROBE}_trigger{call.group(2)}" if call else trigger.function
            copy = dataclasses.replace(trigger, schema="pg_temp", table=copy_of, function=function)
            self.probe.add(_subject(trigger), copy.create_sql(), needs=self.copy_unit[copy_of])
        for policy in self.policies:
            copy_of = self.copy_name.get(self.place(policy.schema, policy.table))
            if copy_of is not None:
                copy_policy = dataclasses.replace(policy, schema="pg_temp", table=copy_of)
                self.probe.add(_subject(policy), copy_policy.create_sql(), needs=self.copy_unit[copy_of])

    def _probe_functions(self) -> None:
        self.function_copies = []
        for number, function in enumerate(self.functions):
            name = f"{_PROBE}_fn_{number}"
            self.function_copies.append(_signature("pg_temp", name, function.identity))
            self.probe.add(_subject(function), _probe_function(function, name).create_sql()[:1])

    def _probe_matviews(self) -> None:
        """A temporary table with the matview's columns, carrying its declared indexes."""
        self.index_copy: dict[tuple[tuple[str, ...], str], str] = {}  # (matview, index) -> copy
        for number, matview in enumerate(self.matviews):
            if self.view_oid[matview.key()] is None:
                continue
            name = f"{_PROBE}_mv_{number}"
            statements = [f"CREATE TEMP TABLE {name} (LIKE {qualified(matview.schema, matview.name)})"]
            for position, statement in enumerate(matview.indexes):
                match = _INDEX.match(statement)
                if match is None:
                    continue  # compared by name only
                copy = f"{name}_{position}"
                unique = "UNIQUE " if match.group(1) else ""
                statements.append(f"CREATE {unique}INDEX {copy} ON pg_temp.{name}{match.group(2)}")
                self.index_copy[(matview.key(), _unquote(matview.index_name(statement)))] = copy
            self.probe.add(_subject(matview), statements)

    def _not_compared(self, entity: Entity) -> list[Drift]:
        error = self.probe.failed.get(_subject(entity))
        if error is None:
            return []
        return [Drift(
            entity,
            _subject(entity),
            f"could not be compared with the models: creating it on a temporary copy failed ({error})",
            "none",
            fix="let the connecting role create temporary objects (TEMP) and use what the object names",
        )]

    # functions ------------------------------------------------------------------------------
    def _functions(self) -> list[Drift]:
        if not self.functions:
            return []
        signatures = [_signature(e.schema, e.name, e.identity) for e in self.functions]
        oids = _procedures(self.connection, signatures + self.function_copies)
        rows = {
            int(r[0]): tuple(r[1:])
            for r in self.connection.execute(_FUNCTIONS, {"oids": [o for o in oids if o is not None]})
        }
        found: list[Drift] = []
        count = len(self.functions)
        for number, function in enumerate(self.functions):
            live, copy = oids[number], oids[count + number]
            if live is None:
                continue  # the comment diff found it (it goes with the function): nothing to add
            if copy is None:
                found += self._not_compared(function)
                continue
            # A kind whose create_sql changes the function after CREATE (a reader pinning its
            # search_path by ALTER FUNCTION) sets SET options the probe cannot reproduce.
            settings = type(function).create_sql is Function.create_sql
            aspects = _function_aspects(rows[live], rows[copy], settings=settings)
            if not aspects:
                continue
            old: Entity = function
            if rows[live][4] != rows[copy][4]:  # CREATE OR REPLACE cannot change the result type
                old = dataclasses.replace(function, returns=str(rows[live][4]))
            found.append(Drift(
                function, _subject(function),
                f"was changed in the database (CREATE OR REPLACE keeps the comment): {_differs(aspects)}",
                "replace", old,
                fix=f"{_AUTOGENERATE} (it re-creates the function from the models)",
            ))
        return found

    # triggers -------------------------------------------------------------------------------
    def _triggers(self) -> list[Drift]:
        if not self.triggers:
            return []
        rows = {
            (int(r[0]), str(r[1])): r for r in self.connection.execute(_TRIGGERS, {"oids": self.rel_oids})
        }
        calls = [c for c in self.calls.values() if c is not None]
        called = dict(zip(calls, _procedures(self.connection, [f"{c}()" for c in calls]), strict=True))
        found: list[Drift] = []
        for trigger in self.triggers:
            key = self.place(trigger.schema, trigger.table)
            table, copy = self.table_oid.get(key), self.copy_oid.get(key)
            live = rows.get((table[0], trigger.name)) if table else None
            if live is None:
                continue  # missing: the comment diff creates it
            problems: list[str] = []
            if trigger.key() in self.unstamped:
                problems.append("exists without the toolkit's comment (made by hand)")
            if live[2] == "D":
                problems.append("is disabled (ALTER TABLE ... DISABLE TRIGGER): it never fires")
            elif live[2] == "R":
                problems.append("fires only for replication (ENABLE REPLICA TRIGGER), never for the application")
            if live[11]:
                problems.append(f"is disabled on {live[11]} partition(s)")
            declared = rows.get((copy[0], trigger.name)) if copy else None
            if declared is None:
                if not problems:
                    found += self._not_compared(trigger)
                    continue
            else:
                call = self.calls.get(trigger.key())
                expected = called.get(call) if call is not None else declared[4]
                aspects = _trigger_aspects(live, declared, expected)
                if aspects:
                    problems.append(_differs(aspects))
            if problems:
                found.append(Drift(
                    trigger, _subject(trigger), "; ".join(problems), "replace", trigger,
                    fix=f"{_AUTOGENERATE} (it drops and re-creates the trigger)",
                ))
        return found

    # policies -------------------------------------------------------------------------------
    def _policies(self) -> list[Drift]:
        if not self.rel_oids or not (self.policies or self.policed):
            return []
        rows = {
            (int(r[0]), str(r[1])): r for r in self.connection.execute(_POLICIES, {"oids": self.rel_oids})
        }
        found: list[Drift] = []
        for policy in self.policies:
            key = self.place(policy.schema, policy.table)
            table, copy = self.table_oid.get(key), self.copy_oid.get(key)
            live = rows.get((table[0], policy.name)) if table else None
            if live is None:
                continue  # missing: the comment diff creates it
            problems = []
            if policy.key() in self.unstamped:
                problems.append("exists without the toolkit's comment (made by hand)")
            declared = rows.get((copy[0], policy.name)) if copy else None
            if declared is None:
                if not problems:
                    found += self._not_compared(policy)
                    continue
            else:
                aspects = _policy_aspects(live, declared, policy)
                if aspects:
                    problems.append(_differs(aspects))
            if problems:
                found.append(Drift(
                    policy, _subject(policy), "; ".join(problems), "replace", policy,
                    fix=f"{_AUTOGENERATE} (it drops and re-creates the policy)",
                ))
        found += self._undeclared_policies(rows)
        return found

    def _undeclared_policies(self, rows: dict[tuple[int, str], Any]) -> list[Drift]:
        """Policies on policed tables that no model declares: a permissive one is OR'ed with
        ours, so ``USING (true)`` shows every tenant's rows."""
        where = {located[0]: key for key, located in self.table_oid.items() if located is not None}
        found: list[Drift] = []
        for (relid, name), row in sorted(rows.items(), key=lambda item: (item[0][1], item[0][0])):
            key = where.get(relid)
            if key is None or key not in self.policed:
                continue
            if (key, name) in self.declared or (key, name) in self.dropping:
                continue
            schema, table = self.tables[key]
            extra = Policy(
                schema=schema,
                table=table,
                name=name,
                using=row[6],
                with_check=row[7],
                command=_COMMANDS.get(str(row[2]), "ALL"),
                roles=tuple(str(r) for r in row[5]),
                permissive=bool(row[3]),
            )
            kind = "a permissive" if row[3] else "a restrictive"
            found.append(Drift(
                extra,
                _subject(extra),
                f"is {kind} policy no model declares (FOR {extra.command} TO {', '.join(extra.roles)} "
                f"USING {_shown(row[6])} WITH CHECK {_shown(row[7])})"
                + ("; permissive policies are OR'ed, so it widens what those roles see" if row[3] else ""),
                "drop",
                fix=f"{_AUTOGENERATE} (it drops the policy), or declare it in the models",
            ))
        return found

    # views ----------------------------------------------------------------------------------
    def _views(self) -> list[Drift]:
        present = {e.key(): located[0] for e in self.views if (located := self.view_oid[e.key()])}
        if not present:
            return []
        rows = {
            int(oid): _options(options)
            for oid, options in self.connection.execute(_OPTIONS, {"oids": list(present.values())})
        }
        found: list[Drift] = []
        for view in self.views:
            oid = present.get(view.key())
            if oid is None:
                continue
            live = rows.get(oid, {})
            declared = {"security_invoker": "true"} if view.security_invoker else {}
            if live == declared:
                continue
            if view.security_invoker and "security_invoker" not in live:
                problem = (
                    "has security_invoker off while the models declare it on: the view reads with "
                    "its owner's rights, past the row level security of the tables it reads"
                )
            else:
                shown = ", ".join(f"{k}={v}" for k, v in sorted(live.items())) or "none"
                problem = f"has options the models do not declare ({shown})"
            found.append(Drift(
                view, _subject(view), problem, "replace", view,
                fix=f"{_AUTOGENERATE} (it re-creates the view with the declared options)",
            ))
        return found

    def _matviews(self) -> list[Drift]:
        present = {e.key(): located[0] for e in self.matviews if (located := self.view_oid[e.key()])}
        if not present:
            return []
        copies = dict(zip(
            (e.key() for e in self.matviews),
            _relations(self.connection, [f"pg_temp.{_PROBE}_mv_{i}" for i in range(len(self.matviews))]),
            strict=True,
        ))
        oids = list(present.values()) + [c[0] for c in copies.values() if c is not None]
        indexes: dict[int, dict[str, tuple[bool, str]]] = {}
        for relid, name, unique, definition in self.connection.execute(_INDEXES, {"oids": oids}):
            indexes.setdefault(int(relid), {})[str(name)] = (bool(unique), str(definition))
        found: list[Drift] = []
        for matview in self.matviews:
            oid = present.get(matview.key())
            if oid is None:
                continue
            live = indexes.get(oid, {})
            copy = copies[matview.key()]
            declared = indexes.get(copy[0], {}) if copy is not None else {}
            missing, changed, stale = [], [], []
            for statement in matview.indexes:
                name = _unquote(matview.index_name(statement))
                if name not in live:
                    missing.append(statement)
                    continue
                stand_in = declared.get(self.index_copy.get((matview.key(), name), ""))
                if stand_in is not None and not _same_index(live[name], stand_in):
                    changed.append(statement)
                    stale.append(live[name][1])
            if not missing and not changed:
                continue
            problems = []
            if missing:
                names = ", ".join(matview.index_name(i) for i in missing)
                problems.append(f"lacks its declared index {names} (REFRESH CONCURRENTLY needs its unique index)")
            if changed:
                names = ", ".join(matview.index_name(i) for i in changed)
                problems.append(f"has index {names} defined otherwise than the models")
            kept = tuple(i for i in matview.indexes if i not in missing and i not in changed)
            found.append(Drift(
                matview, _subject(matview), "; ".join(problems), "replace",
                dataclasses.replace(matview, indexes=kept + tuple(stale)),
                fix=f"{_AUTOGENERATE} (it creates the declared index)",
            ))
        return found


# --------------------------------------------------------------------------------------------
# helpers


def _relations(connection: Connection, names: list[str]) -> list[Located]:
    """``(oid, relkind)`` of each relation name, ``None`` where there is none (one query)."""
    if not names:
        return []
    found: dict[int, Located] = {}
    for i, oid, kind in connection.execute(_RELATIONS, {"names": names}):
        found[int(i)] = (int(oid), str(kind)) if oid is not None else None
    return [found.get(i + 1) for i in range(len(names))]


def _procedures(connection: Connection, signatures: list[str]) -> list[int | None]:
    """The oid of each function signature, ``None`` where there is none (one query)."""
    if not signatures:
        return []
    found = {int(i): oid for i, oid in connection.execute(_PROCEDURES, {"sigs": signatures})}
    return [int(o) if (o := found.get(i + 1)) is not None else None for i in range(len(signatures))]


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def _shown(expression: str | None) -> str:
    return f"({expression})" if expression is not None else "(none)"


def _function_aspects(live: tuple[Any, ...], declared: tuple[Any, ...], *, settings: bool = True) -> list[str]:
    body, secdef, config, language, result, volatile, strict, leakproof, parallel = range(9)
    aspects = []
    if layout_free(str(live[body])) != layout_free(str(declared[body])):  # see Function.same_definition
        aspects.append("its body")
    if live[secdef] != declared[secdef]:
        aspects.append("SECURITY DEFINER" if live[secdef] else "SECURITY INVOKER")
    if settings and list(live[config] or []) != list(declared[config] or []):
        aspects.append(f"its SET options ({', '.join(live[config] or []) or 'none'})")
    if live[language] != declared[language]:
        aspects.append(f"its language ({live[language]})")
    if live[result] != declared[result]:
        aspects.append(f"its result ({live[result]})")
    names = ("volatility", "strictness", "LEAKPROOF", "parallel safety")
    for name, i in zip(names, (volatile, strict, leakproof, parallel), strict=True):
        if live[i] != declared[i]:
            aspects.append(name)
    return aspects


def _trigger_aspects(live: Any, declared: Any, function: int | None) -> list[str]:
    aspects = []
    if live[4] != function:
        aspects.append(f"the function it calls ({live[5]})")
    if live[3] != declared[3]:
        aspects.append("its timing, events or level (FOR EACH ROW/STATEMENT)")
    if bytes(live[6] or b"") != bytes(declared[6] or b""):
        aspects.append("its arguments")
    if list(live[7] or []) != list(declared[7] or []):
        aspects.append("its UPDATE OF columns")
    if (live[8], live[9]) != (declared[8], declared[9]):
        aspects.append("its transition tables (REFERENCING)")
    when_live, when_declared = _WHEN.search(str(live[10])), _WHEN.search(str(declared[10]))
    if (when_live and when_live.group(1)) != (when_declared and when_declared.group(1)):
        aspects.append("its WHEN condition")
    return aspects


def _policy_aspects(live: Any, declared: Any, entity: Policy) -> list[str]:
    aspects = []
    if live[2] != declared[2]:
        aspects.append(f"its command (FOR {_COMMANDS.get(str(live[2]), live[2])})")
    if live[3] != declared[3]:
        aspects.append("PERMISSIVE" if live[3] else "RESTRICTIVE")
    # CURRENT_USER names whoever created it: the migrating role here, the doctor's role there
    by_session = any(r.upper() in {"CURRENT_USER", "CURRENT_ROLE", "SESSION_USER"} for r in entity.roles)
    if list(live[4]) != list(declared[4]) and not by_session:
        aspects.append(f"its roles (TO {', '.join(live[5])})")
    if live[6] != declared[6]:
        aspects.append(f"its USING {_shown(live[6])}")
    if live[7] != declared[7]:
        aspects.append(f"its WITH CHECK {_shown(live[7])}")
    return aspects


def _options(raw: Iterable[str] | None) -> dict[str, str]:
    """A view's reloptions; boolean ones PostgreSQL's way (``on``, ``yes``, ``1``...), false
    ones left out (the same as absent)."""
    found = {}
    for option in raw or ():
        name, _, value = option.partition("=")
        if name in ("security_invoker", "security_barrier"):
            if value.lower() in _TRUE:
                found[name] = "true"
        else:
            found[name] = value
    return found


def _same_index(live: tuple[bool, str], declared: tuple[bool, str]) -> bool:
    """Same uniqueness and the same definition after ``USING`` (method, keys, predicate)."""

    def tail(definition: str) -> str:
        return definition.split(" USING ", 1)[-1]

    return live[0] == declared[0] and tail(live[1]) == tail(declared[1])
