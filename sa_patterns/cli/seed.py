"""``sa-patterns seed module:function --seed 42``: run a seed function built on the factories.

The function receives a :class:`~sa_patterns.testing.factories.Factories` bound to an
installed session; it runs in one transaction that commits at the end (nothing is written if it
fails). The same ``--seed`` gives the same rows, and factories with ``unique_by`` make a re-run
find its rows instead of duplicating them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from .._spec import load_object
from ..database import normalise_url
from ..errors import ConfigurationError
from ..install import install
from ..testing.factories import Factories

__all__ = ["add_parser", "load_function", "seed"]


def load_function(spec: str) -> Callable[[Factories], Any]:
    """``package.module:function`` → the function (the current directory is importable)."""
    fn = load_object(spec, what="seed target", kind="function")
    if not callable(fn):
        raise ConfigurationError(f"seed target {spec!r} is not a function.")
    return fn  # type: ignore[no-any-return]


def seed(url: str, spec: str, seed_value: int = 0) -> Factories:
    """Run the seed function ``spec`` against ``url`` with ``seed_value``; commits on success."""
    fn = load_function(spec)
    engine = create_engine(normalise_url(url))
    try:
        factory = install(sessionmaker(engine))
        assert isinstance(factory, sessionmaker)
        with factory.begin() as session:
            factories = Factories(session, seed=seed_value)
            fn(factories)
        return factories
    finally:
        engine.dispose()


def _run(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("DATABASE_URL", "")
    if not url:
        raise ConfigurationError("sa-patterns seed needs --url or DATABASE_URL.")
    factories = seed(url, args.target, args.seed)
    models = sorted(set(factories.created) | set(factories.found))
    for model in models:
        print(f"{model}: {factories.created[model]} created, {factories.found[model]} already there")
    print(f"seed {args.seed}: done")
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("seed", help="run a seed function (module:function) deterministically")
    parser.add_argument("target", help="the seed function, e.g. app.seeds:main")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--url", help="database URL (default: $DATABASE_URL)")
    parser.set_defaults(func=_run)
