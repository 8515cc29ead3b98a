"""The plugin's clean-up of its roles holds when the owner's default privileges grant to the app
role in a schema that survives (what `sa-patterns roles` + a migration leave in ``public``):
``DROP OWNED BY owner, app, admin`` in one statement failed there with "could not find tuple for
default ACL"; one statement per role does not."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from sa_patterns.database import Server, scratch_database
from sa_patterns.testing.logins import create_logins, drop_owned, drop_roles, run_role_names


def test_drop_owned_with_default_privileges_between_the_roles(pg_server: Server) -> None:
    names = run_role_names("logins")
    try:
        with scratch_database(pg_server.url, prefix="sap_logins") as url:
            create_logins(url, names)
            engine = create_engine(url)
            try:
                with engine.begin() as conn:
                    conn.execute(text(f'GRANT CREATE ON SCHEMA public TO "{names.owner}"'))
                    conn.execute(text(f'SET ROLE "{names.owner}"'))
                    conn.execute(text(
                        f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO "{names.app}", "{names.admin}"'
                    ))
                    conn.execute(text("CREATE TABLE notes (id int)"))
                drop_owned(url, names)
                with engine.connect() as conn:
                    left = conn.execute(text(
                        "SELECT count(*) FROM pg_default_acl d JOIN pg_roles r ON r.oid = d.defaclrole "
                        "WHERE r.rolname = :owner"), {"owner": names.owner}).scalar_one()
                    tables = conn.execute(text("SELECT to_regclass('public.notes')")).scalar_one()
                assert (left, tables) == (0, None)
            finally:
                engine.dispose()
    finally:
        drop_roles(pg_server.url, names)
