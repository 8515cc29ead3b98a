"""``sa-patterns init DIR``: a migration environment already wired for the toolkit."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError

__all__ = ["add_parser", "init", "template_dir"]


def template_dir() -> Path:
    """The shipped template: inside the wheel, or the repo's top-level ``alembic/`` folder."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_templates" / "sa_patterns", package.parent / "alembic"):
        if (candidate / "env.py").is_file() and (candidate / "script.py.mako").is_file():
            return candidate
    raise ConfigurationError("the sa_patterns migration template is missing from the install.")


def init(
    directory: str | Path,
    *,
    metadata: str = "app.models:Base",
    use_async: bool = False,
    ini_path: str | Path | None = None,
) -> Path:
    """Write ``directory`` (env.py, script.py.mako, versions/) and an ``alembic.ini`` beside it.

    Returns the path of the ini file. Refuses to overwrite an existing, non-empty directory.
    """
    target = Path(directory)
    if target.exists() and any(target.iterdir()):
        raise ConfigurationError(f"{target} exists and is not empty; choose a new directory.")
    source = template_dir()
    (target / "versions").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / ("env_async.py" if use_async else "env.py"), target / "env.py")
    shutil.copyfile(source / "script.py.mako", target / "script.py.mako")
    shutil.copyfile(source / "README", target / "README")
    ini = Path(ini_path) if ini_path else target.parent / "alembic.ini"
    if not ini.exists():
        text = (source / "alembic.ini.mako").read_text()
        text = text.replace("${script_location}", str(target)).replace("${metadata}", metadata)
        ini.write_text(text)
    return ini


def _run(args: argparse.Namespace) -> int:
    ini = init(args.directory, metadata=args.metadata, use_async=args.use_async)
    print(f"wrote {args.directory}/ and {ini}. Next:")
    print("  sa-patterns roles --url <a superuser URL>   # once: owner, app and admin roles")
    print("  export DATABASE_URL=<the owner role's URL>  # env.py reads it (alembic.ini has none)")
    print("  alembic revision --autogenerate -m init     # as the owner role: tables, RLS, grants")
    print("  alembic upgrade head                        # then the app connects as the app role")
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("init", help="write a migration environment wired for sa_patterns")
    parser.add_argument("directory", help="where env.py and versions/ go (e.g. migrations)")
    parser.add_argument(
        "--metadata", default="app.models:Base", help="models as package.module:attr (default %(default)s)"
    )
    parser.add_argument("--async", dest="use_async", action="store_true", help="asyncio env.py")
    parser.set_defaults(func=_run)
