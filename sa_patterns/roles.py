"""The role model the database wall needs, and the grants the toolkit generates for it.

Three roles, named by configuration rather than frozen into models and migrations:

``owner``  runs the migrations and owns every object (tables, functions, views). It is subject
           to row-level security because every tenant table's RLS is ``FORCE``d.
``app``    the application's login: NOSUPERUSER NOBYPASSRLS, owns nothing; gets DML on the
           tables, ``USAGE, SELECT`` on their sequences and ``EXECUTE`` on the toolkit's
           functions; only ``SELECT, INSERT`` on the audit log (it can neither edit nor erase it).
``admin``  operators' role: what the app role may do, plus a policy on every tenant table
           letting it see all tenants inside :func:`sa_patterns.all_tenants`.

Names come from ``SA_PATTERNS_OWNER_ROLE`` / ``SA_PATTERNS_APP_ROLE`` / ``SA_PATTERNS_ADMIN_ROLE``
(defaults ``app_owner``, ``app_user``, ``app_admin``) or :func:`use_roles`. Objects the toolkit
generates refer to them as the placeholders :data:`OWNER`, :data:`APP` and :data:`ADMIN`, which
:func:`resolve_role` turns into names when the SQL is *run*: a migration written today grants to
whatever the deployment running it configures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from .errors import ConfigurationError

__all__ = [
    "ADMIN",
    "APP",
    "OWNER",
    "RoleNames",
    "configured_roles",
    "resolve_role",
    "use_roles",
]

#: Placeholders stored in generated objects; :func:`resolve_role` maps them to names.
OWNER, APP, ADMIN = "@owner", "@app", "@admin"

_ENV = {"owner": "SA_PATTERNS_OWNER_ROLE", "app": "SA_PATTERNS_APP_ROLE", "admin": "SA_PATTERNS_ADMIN_ROLE"}


@dataclass(frozen=True)
class RoleNames:
    """The three roles' names in one deployment."""

    owner: str = "app_owner"
    app: str = "app_user"
    admin: str = "app_admin"

    def __post_init__(self) -> None:
        for part in ("owner", "app", "admin"):
            name = getattr(self, part)
            if not isinstance(name, str) or not name or len(name.encode()) > 63 or "\x00" in name:
                raise ConfigurationError(
                    f"the {part} role name {name!r} is not a PostgreSQL role name (1 to 63 "
                    f"bytes); set {_ENV[part]} or pass it to use_roles()."
                )
        if len({self.owner, self.app, self.admin}) != 3:
            raise ConfigurationError(
                f"owner, app and admin roles must be three different roles, got {self}: the app "
                "role must not own the tables nor hold the admin policy."
            )


_override: ContextVar[RoleNames | None] = ContextVar("sa_patterns_roles", default=None)


def configured_roles() -> RoleNames:
    """The names in force: :func:`use_roles`, else the environment, else the defaults."""
    override = _override.get()
    if override is not None:
        return override
    defaults = RoleNames()
    return RoleNames(**{part: os.environ.get(var) or getattr(defaults, part) for part, var in _ENV.items()})


@contextmanager
def use_roles(names: RoleNames) -> Iterator[RoleNames]:
    """Run a block (a migration, a test) with these role names in force."""
    token = _override.set(names)
    try:
        yield names
    finally:
        _override.reset(token)


def resolve_role(name: str) -> str:
    """A placeholder (``"@app"``) as the configured role's name; any other name unchanged."""
    if name.startswith("@"):
        roles = configured_roles()
        part = name[1:]
        if part not in _ENV:
            raise ConfigurationError(f"unknown role placeholder {name!r}: use @owner, @app or @admin.")
        resolved: str = getattr(roles, part)
        return resolved
    return name
