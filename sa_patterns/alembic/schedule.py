"""``op.schedule_refresh`` / ``op.unschedule_refresh``: a materialized view refreshed by
``pg_cron`` on a schedule, created and removed by migrations.

pg_cron (``postgresql-15-cron`` on Debian) must be in ``shared_preload_libraries`` and
``CREATE EXTENSION pg_cron`` must have run in ``cron.database_name``; the job then runs in the
database named here (``cron.schedule_in_database``, pg_cron 1.4+). Jobs are keyed by name, so
scheduling again updates the job in place. The statements are plain SQL with literals (a
migration takes no bound parameters), so ``alembic upgrade --sql`` prints them too.
"""

from __future__ import annotations

from typing import Any

from alembic.operations import MigrateOperation, Operations
from sqlalchemy import DDL

from ..schema.objects import qualified, quote_literal

__all__ = ["ScheduleRefreshOp", "UnscheduleRefreshOp", "refresh_command"]


def refresh_command(view: str, schema: str | None = None, *, concurrently: bool = False) -> str:
    mode = "CONCURRENTLY " if concurrently else ""
    return f"REFRESH MATERIALIZED VIEW {mode}{qualified(schema, view)}"


def _job(view: str, schema: str | None, job_name: str | None) -> str:
    return job_name or f"sa_patterns refresh {qualified(schema, view)}"


@Operations.register_operation("schedule_refresh")
class ScheduleRefreshOp(MigrateOperation):
    """Schedule ``REFRESH MATERIALIZED VIEW`` with pg_cron (``schedule``: cron syntax or
    ``'30 seconds'``)."""

    def __init__(
        self,
        view: str,
        schedule: str,
        *,
        schema: str | None = None,
        concurrently: bool = False,
        database: str | None = None,
        job_name: str | None = None,
    ) -> None:
        self.view, self.schedule, self.schema = view, schedule, schema
        self.concurrently, self.database = concurrently, database
        self.job_name = _job(view, schema, job_name)

    @classmethod
    def schedule_refresh(
        cls,
        operations: Operations,
        view: str,
        schedule: str,
        *,
        schema: str | None = None,
        concurrently: bool = False,
        database: str | None = None,
        job_name: str | None = None,
    ) -> None:
        operations.invoke(
            cls(view, schedule, schema=schema, concurrently=concurrently, database=database, job_name=job_name)
        )

    def sql(self) -> str:
        command = refresh_command(self.view, self.schema, concurrently=self.concurrently)
        args = [quote_literal(self.job_name), quote_literal(self.schedule), quote_literal(command)]
        if self.database:
            return f"SELECT cron.schedule_in_database({', '.join(args)}, {quote_literal(self.database)})"
        return f"SELECT cron.schedule({', '.join(args)})"

    def reverse(self) -> UnscheduleRefreshOp:
        return UnscheduleRefreshOp(self)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("schedule_refresh", self.job_name, self.schedule)


@Operations.register_operation("unschedule_refresh")
class UnscheduleRefreshOp(MigrateOperation):
    """Remove a job made by :class:`ScheduleRefreshOp` (keeps it, so the downgrade can
    schedule it again)."""

    def __init__(self, scheduled: ScheduleRefreshOp) -> None:
        self.scheduled = scheduled

    @classmethod
    def unschedule_refresh(
        cls,
        operations: Operations,
        view: str,
        schedule: str = "",
        *,
        schema: str | None = None,
        concurrently: bool = False,
        database: str | None = None,
        job_name: str | None = None,
    ) -> None:
        scheduled = ScheduleRefreshOp(
            view, schedule, schema=schema, concurrently=concurrently, database=database, job_name=job_name
        )
        operations.invoke(cls(scheduled))

    def sql(self) -> str:
        return f"SELECT cron.unschedule({quote_literal(self.scheduled.job_name)})"

    def reverse(self) -> ScheduleRefreshOp:
        return self.scheduled

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("unschedule_refresh", self.scheduled.job_name)


@Operations.implementation_for(ScheduleRefreshOp)
def _schedule(operations: Operations, operation: ScheduleRefreshOp) -> None:
    operations.execute(DDL(operation.sql().replace("%", "%%")))  # type: ignore[no-untyped-call]


@Operations.implementation_for(UnscheduleRefreshOp)
def _unschedule(operations: Operations, operation: UnscheduleRefreshOp) -> None:
    operations.execute(DDL(operation.sql().replace("%", "%%")))  # type: ignore[no-untyped-call]
