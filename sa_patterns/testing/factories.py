"""Model factories: sequences, related objects, deterministic randomness, get-or-create.

A :class:`Factory` describes how to make one model's rows; a :class:`Factories` binds factories
to a session and a seed::

    users = Factory(User, email=seq("user{n}@example.com"),
                    name=lambda c: c.random.choice(["Ada", "Grace"]), unique_by=("email",))
    posts = Factory(Post, author=users, title=seq("Post {n}"), unique_by=("title",))

    f = Factories(session, seed=42)
    post = f.create(posts)               # creates the author too
    f.create_batch(posts, 3, author=post.author)

Determinism: each factory draws from its own ``random.Random(f"{seed}:{Model}")`` and its own
counters, so the same seed and the same calls give the same rows, and adding a factory does not
change what the others produce. Idempotence: with ``unique_by``, ``create`` first looks the row
up by those attributes and returns it when present; values (and related objects) are still
computed, so a re-run consumes randomness exactly like the first run and finds every row again.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ..errors import ConfigurationError

__all__ = ["AsyncFactories", "Factories", "Factory", "Sequence_", "seq"]

T = TypeVar("T")


@dataclass(frozen=True)
class Sequence_:
    """A per-factory counter: ``seq("user{n}@x.org")`` or ``seq(lambda n: n * 10)``."""

    template: str | Callable[[int], Any]

    def value(self, n: int) -> Any:
        return self.template.format(n=n) if isinstance(self.template, str) else self.template(n)


def seq(template: str | Callable[[int], Any]) -> Sequence_:
    """A sequence value: ``n`` counts 1, 2, 3, … per factory and per :class:`Factories`."""
    return Sequence_(template)


@dataclass
class Context:
    """What a callable attribute receives: ``n`` (this object's number), ``random`` (seeded),
    ``values`` (attributes computed so far, in declaration order) and ``factories``."""

    n: int
    random: random.Random
    values: dict[str, Any]
    factories: Factories


class Factory(Generic[T]):
    """How to build ``model`` objects. Attribute values may be literals, :func:`seq`,
    callables taking a :class:`Context`, or another :class:`Factory` (a related object)."""

    def __init__(
        self, model: type[T], *, unique_by: Sequence[str] = (), **attributes: Any
    ) -> None:
        self.model = model
        self.unique_by = tuple(unique_by)
        self.attributes = attributes
        unknown = [k for k in self.unique_by if k not in attributes]
        if unknown:
            raise ConfigurationError(
                f"Factory({model.__name__}, unique_by={self.unique_by}): {unknown[0]!r} has no "
                "declared value; unique_by must name attributes the factory sets."
            )

    def __repr__(self) -> str:
        return f"Factory({self.model.__name__})"


@dataclass
class Factories:
    """Factories bound to ``session`` and ``seed``: ``build``, ``create``, ``create_batch``.

    ``created`` and ``found`` count objects per model name (a re-run of an idempotent seed
    shows everything under ``found``).
    """

    session: Session
    seed: int = 0
    created: Counter[str] = field(default_factory=Counter)
    found: Counter[str] = field(default_factory=Counter)
    _counters: dict[int, int] = field(default_factory=dict)
    _randoms: dict[int, random.Random] = field(default_factory=dict)

    def _random(self, factory: Factory[Any]) -> random.Random:
        rng = self._randoms.get(id(factory))
        if rng is None:
            rng = random.Random(f"{self.seed}:{factory.model.__module__}.{factory.model.__name__}")
            self._randoms[id(factory)] = rng
        return rng

    def _values(self, factory: Factory[Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
        n = self._counters.get(id(factory), 0) + 1
        self._counters[id(factory)] = n
        ctx = Context(n, self._random(factory), {}, self)
        for name, spec in factory.attributes.items():
            if name in overrides:
                value = overrides[name]
            elif isinstance(spec, Sequence_):
                value = spec.value(n)
            elif isinstance(spec, Factory):
                value = self.create(spec)
            elif callable(spec) and not isinstance(spec, type):
                value = spec(ctx)
            else:
                value = spec
            ctx.values[name] = value
        for name, value in overrides.items():
            ctx.values.setdefault(name, value)
        return ctx.values

    def build(self, factory: Factory[T], **overrides: Any) -> T:
        """A new, unsaved object (related factories are still created)."""
        return factory.model(**self._values(factory, overrides))

    def create(self, factory: Factory[T], **overrides: Any) -> T:
        """The object, added to the session; with ``unique_by``, the existing row if present."""
        values = self._values(factory, overrides)
        name = factory.model.__name__
        if factory.unique_by:
            key = {k: values[k] for k in factory.unique_by}
            existing = self.session.scalars(
                select(factory.model).filter_by(**key).limit(1)
            ).first()
            if existing is not None:
                self.found[name] += 1
                return existing
        obj = factory.model(**values)
        self.session.add(obj)
        self.created[name] += 1
        return obj

    def create_batch(self, factory: Factory[T], count: int, **overrides: Any) -> list[T]:
        """``count`` objects from ``factory`` (the same overrides for each)."""
        return [self.create(factory, **overrides) for _ in range(count)]


class AsyncFactories:
    """:class:`Factories` for an ``AsyncSession``: ``await f.create(...)``.

    Each call runs the sync factories on the session's sync side (``run_sync``), so lookups
    and related objects behave exactly as with :class:`Factories`.
    """

    def __init__(self, session: AsyncSession, seed: int = 0) -> None:
        self.session = session
        self.sync = Factories(session.sync_session, seed=seed)

    @property
    def seed(self) -> int:
        return self.sync.seed

    async def create(self, factory: Factory[T], **overrides: Any) -> T:
        return await self.session.run_sync(lambda _: self.sync.create(factory, **overrides))

    async def create_batch(self, factory: Factory[T], count: int, **overrides: Any) -> list[T]:
        return await self.session.run_sync(
            lambda _: self.sync.create_batch(factory, count, **overrides)
        )

    async def build(self, factory: Factory[T], **overrides: Any) -> T:
        return await self.session.run_sync(lambda _: self.sync.build(factory, **overrides))
