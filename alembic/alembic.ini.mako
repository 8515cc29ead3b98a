# Alembic configuration written by `sa-patterns init`.

[alembic]
script_location = ${script_location}
prepend_sys_path = .
path_separator = os

# Where the models live: "package.module:attribute" of a MetaData or a DeclarativeBase.
sa_patterns.metadata = ${metadata}

# The database URL is read from DATABASE_URL when this is empty (keeps secrets out of files).
sqlalchemy.url =

# A brief lock (policy, row-level security, trigger, ADD COLUMN) waits at most this long, so it
# never queues behind a long transaction with every writer queued behind it; a revision whose
# lock wait times out is rolled back and retried this many times, with a growing pause.
sa_patterns.lock_timeout = 2s
sa_patterns.lock_retries = 5

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
