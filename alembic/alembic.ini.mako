# Alembic configuration written by `sa-patterns init`.

[alembic]
script_location = ${script_location}
prepend_sys_path = .
path_separator = os

# Where the models live: "package.module:attribute" of a MetaData or a DeclarativeBase.
sa_patterns.metadata = ${metadata}

# The database URL is read from DATABASE_URL when this is empty (keeps secrets out of files).
sqlalchemy.url =

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
