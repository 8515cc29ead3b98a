"""Run a unit of work at an isolation level and re-run it when PostgreSQL asks for a retry.

Under ``SERIALIZABLE`` (and ``REPEATABLE READ``) PostgreSQL aborts a transaction whose result
could differ from some serial order with SQLSTATE ``40001`` (serialization_failure); any
level can be chosen as a deadlock victim with ``40P01``. Both mean "nothing was written, run
the *whole* transaction again": re-running only the failed statement would act on a snapshot
that no longer holds. Every other error is final and is never retried.

Three shapes, sync and async::

    @transaction(Session)                   # decorator: the session is the first argument
    def transfer(session, src, dst, amount): ...

    for attempt in transaction(Session):    # a block that is re-run
        with attempt as session: ...

    with transaction(Session) as session:   # one attempt (a with block cannot re-run itself)
        ...

When the retries are used up (or a one-attempt block fails with 40001/40P01) the error is
:class:`~sa_patterns.errors.ConcurrencyConflict`, chained to the driver's error.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from .errors import ConcurrencyConflict, ConfigurationError
from .integrity import sqlstate_of

__all__ = ["RETRYABLE_SQLSTATES", "AsyncAttempt", "Attempt", "is_retryable", "transaction"]

log = logging.getLogger("sa_patterns.transactions")

#: serialization_failure and deadlock_detected: the server rolled back, re-running is safe.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})

S = TypeVar("S")
R = TypeVar("R")
P = ParamSpec("P")


def is_retryable(exc: BaseException) -> bool:
    """True for serialization failures and deadlocks (wrapped by SQLAlchemy or not)."""
    return sqlstate_of(exc) in RETRYABLE_SQLSTATES


def _conflict(exc: BaseException, attempts: int) -> ConcurrencyConflict:
    what = "deadlock" if sqlstate_of(exc) == "40P01" else "serialization failure"
    return ConcurrencyConflict(
        f"the transaction still failed with a {what} (SQLSTATE {sqlstate_of(exc)}) after "
        f"{attempts} attempt(s). Raise retries=, shorten the transaction, or take locks in a "
        "consistent order."
    )


class _Attempt(Generic[S]):
    """State shared by one run of the unit: its session and how it ended."""

    def __init__(self, runner: transaction, number: int) -> None:
        self.runner = runner
        self.number = number
        self.session: S | None = None
        self.error: BaseException | None = None
        self.succeeded = False

    def _finish(self, exc: BaseException | None) -> bool:
        """Record the outcome; True means 'swallow the error, the loop will retry'."""
        if exc is None:
            self.succeeded = True
            return False
        if not is_retryable(exc):
            return False
        self.error = exc
        if self.number > self.runner.retries:
            raise _conflict(exc, self.number) from exc
        log.info(
            "retrying transaction (attempt %d of %d) after SQLSTATE %s",
            self.number + 1,
            self.runner.retries + 1,
            sqlstate_of(exc),
        )
        return True


class Attempt(_Attempt[Session]):
    """One run of the unit in a ``for attempt in transaction(...)`` loop."""

    def __enter__(self) -> Session:
        session: Session = self.runner.session_factory()
        self.session = session
        self.runner._begin(session)
        return session

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        session = self.session
        assert session is not None
        try:
            if exc is None:
                try:
                    session.commit()
                except BaseException as commit_exc:
                    session.rollback()
                    return self._finish_commit(commit_exc)
            else:
                session.rollback()
        finally:
            session.close()
        return self._finish(exc)

    def _finish_commit(self, exc: BaseException) -> bool:
        if self._finish(exc):
            return True
        raise exc


class AsyncAttempt(_Attempt[AsyncSession]):
    """One run of the unit in an ``async for attempt in transaction(...)`` loop."""

    async def __aenter__(self) -> AsyncSession:
        session: AsyncSession = self.runner.session_factory()
        self.session = session
        await self.runner._abegin(session)
        return session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        session = self.session
        assert session is not None
        try:
            if exc is None:
                try:
                    await session.commit()
                except BaseException as commit_exc:
                    await session.rollback()
                    if self._finish(commit_exc):
                        return True
                    raise
            else:
                await session.rollback()
        finally:
            await session.close()
        return self._finish(exc)


class transaction:
    """A unit of work at ``isolation_level``, re-run up to ``retries`` times on 40001/40P01.

    ``session_factory`` is a ``sessionmaker`` or ``async_sessionmaker`` (anything returning a
    fresh session when called). ``isolation_level=None`` keeps the engine's level. Between
    attempts it sleeps a random time in ``[0, min(max_delay, base_delay * 2**n)]`` (full
    jitter), so competing workers do not collide again in lockstep. The unit must be safe to
    run more than once: no side effects outside the database before it commits.
    """

    def __init__(
        self,
        session_factory: Callable[[], Any],
        isolation_level: str | None = "SERIALIZABLE",
        retries: int = 5,
        *,
        base_delay: float = 0.01,
        max_delay: float = 1.0,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.session_factory = session_factory
        self.isolation_level = isolation_level
        self.retries = retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._single: Any = None

    # -- shared -------------------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        return {"isolation_level": self.isolation_level} if self.isolation_level else {}

    def _begin(self, session: Session) -> None:
        # Checking the connection out with the option sets the level before BEGIN.
        session.connection(execution_options=self._options())

    async def _abegin(self, session: AsyncSession) -> None:
        await session.connection(execution_options=self._options())

    def delay(self, attempt: int) -> float:
        """Seconds to wait before re-running after failed ``attempt`` (1-based)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))

    # -- loop form ----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Attempt]:
        for number in range(1, self.retries + 2):
            attempt = Attempt(self, number)
            yield attempt
            if attempt.succeeded or attempt.error is None:
                return
            time.sleep(self.delay(number))

    async def __aiter__(self) -> AsyncIterator[AsyncAttempt]:
        for number in range(1, self.retries + 2):
            attempt = AsyncAttempt(self, number)
            yield attempt
            if attempt.succeeded or attempt.error is None:
                return
            await asyncio.sleep(self.delay(number))

    # -- decorator form -----------------------------------------------------------------------
    @overload
    def __call__(
        self, fn: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate ``fn(session, *args)``: callers call ``fn(*args)`` and get its result."""
        is_async_factory = isinstance(self.session_factory, async_sessionmaker)
        if inspect.iscoroutinefunction(fn) != is_async_factory:
            raise ConfigurationError(
                f"@transaction on {fn.__name__}: an async def needs an async_sessionmaker and a "
                "plain def a sessionmaker; the two were mixed."
            )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                result: Any = None
                async for attempt in self:
                    async with attempt as session:
                        result = await fn(session, *args, **kwargs)
                return result

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result: Any = None
            for attempt in self:
                with attempt as session:
                    result = fn(session, *args, **kwargs)
            return result

        return wrapper

    # -- one-attempt block --------------------------------------------------------------------
    def __enter__(self) -> Session:
        self._single = Attempt(transaction(self.session_factory, self.isolation_level, 0), 1)
        return cast(Session, self._single.__enter__())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        single, self._single = self._single, None
        single.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> AsyncSession:
        self._single = AsyncAttempt(transaction(self.session_factory, self.isolation_level, 0), 1)
        return cast(AsyncSession, await self._single.__aenter__())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        single, self._single = self._single, None
        await single.__aexit__(exc_type, exc, tb)
