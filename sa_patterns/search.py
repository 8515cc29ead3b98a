"""Full-text search on a generated ``tsvector`` column: ``Searchable``, ``rank()``, ``headline()``.

PostgreSQL keeps the vector itself (``GENERATED ALWAYS AS (...) STORED``): no trigger to
forget in a migration, no vector left empty because a listener was not attached, and the
same expression in the model, the migration and the catalog. A GIN index on the column makes
``search_vector @@ tsquery`` an index scan. Queries are parsed with ``websearch_to_tsquery``
(or a prefix query built from words only), so no user text can be a syntax error, and the
rank, the filter and the headline all use the very same ``tsquery`` expression and config.

Adding a generated column to a table that has rows rewrites it under ACCESS EXCLUSIVE, so there
the vector is a plain column kept by a trigger computing the same expression
(:func:`search_vector_sql`, :mod:`sa_patterns.alembic.adopt_search`); :func:`kept_vector` reads
that form back from the catalog for autogenerate and the doctor.
"""

from __future__ import annotations

import inspect as inspect_module
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    Column,
    Computed,
    Index,
    String,
    bindparam,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import REGCONFIG, TSQUERY, TSVECTOR
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import ColumnProperty, Mapper, QueryableAttribute, deferred
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import Enum, Float, TypeDecorator

from ._mapping import own_table, when_mapped
from .errors import ConfigurationError
from .schema import Extension, ident, quote, quote_literal, register
from .schema.objects import qualified

if TYPE_CHECKING:
    from typing import TypeAlias

    from sqlalchemy import Select
    from sqlalchemy.orm import Mapped
    from typing_extensions import Self

    #: A query's configuration: a name, or a column / SQL expression (per-row language).
    ConfigArg: TypeAlias = "str | ColumnElement[Any] | QueryableAttribute[Any] | None"

__all__ = [
    "GENERATED_INFO",
    "KNOWN_CONFIGS",
    "MAX_PREFIX_WORDS",
    "MAX_QUERY_CHARS",
    "SEARCH_INFO",
    "SEARCH_VECTOR",
    "KeptVector",
    "Searchable",
    "headline",
    "kept_vector",
    "kept_vector_function",
    "rank",
    "search_vector_sql",
    "tsquery",
]

#: The text search configurations PostgreSQL 15+ ships (``SELECT cfgname FROM pg_ts_config``).
#: A class cannot ask the database at definition time, so names are checked against this list;
#: set ``__search_custom_config__ = True`` on a model that uses a configuration you created.
KNOWN_CONFIGS: frozenset[str] = frozenset(
    {
        "arabic", "armenian", "basque", "catalan", "danish", "dutch", "english", "finnish",
        "french", "german", "greek", "hindi", "hungarian", "indonesian", "irish", "italian",
        "lithuanian", "nepali", "norwegian", "portuguese", "romanian", "russian", "serbian",
        "simple", "spanish", "swedish", "tamil", "turkish", "yiddish",
    }
)
#: Name of the generated column every ``Searchable`` model gets.
SEARCH_VECTOR = "search_vector"
#: ``Column.info`` key: a generated column the Alembic plugin compares through ``pg_get_expr``
#: and replaces (drop + add, with its indexes) when its expression changes. The value is the
#: names of the columns the expression reads.
GENERATED_INFO = "sa_patterns.generated"
#: ``Column.info`` key of a ``search_vector``: ``(((column, weight), ...), config,
#: config_column)``, what :func:`search_vector_sql` builds the expression from (the online
#: adoption's trigger computes the same expression on ``NEW``).
SEARCH_INFO = "sa_patterns.search"
#: User text beyond this many characters is ignored: a search box never needs more, and
#: PostgreSQL's tsquery tree is recursive (huge queries can exhaust its stack).
MAX_QUERY_CHARS = 1000
#: Prefix (search-as-you-type) queries keep at most this many words.
MAX_PREFIX_WORDS = 16
_MAX_WORD = 200  # well under PostgreSQL's 2047-byte lexeme limit
_WEIGHTS = frozenset("ABCD")
_CONFIG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
_WORD = re.compile(r"\w+")
_SPEC = "__search_spec__"


def _check_config(name: object, owner: str, custom: bool) -> str:
    if not isinstance(name, str) or not _CONFIG_NAME.match(name):
        raise ConfigurationError(
            f"{owner}: {name!r} is not a text search configuration name. Use one of "
            f"{', '.join(sorted(KNOWN_CONFIGS))}, or the name of one you created."
        )
    if not custom and name.lower().removeprefix("pg_catalog.") not in KNOWN_CONFIGS:
        raise ConfigurationError(
            f"{owner}: unknown text search configuration {name!r}. PostgreSQL ships "
            f"{', '.join(sorted(KNOWN_CONFIGS))}. If {name!r} is one you created with CREATE "
            f"TEXT SEARCH CONFIGURATION, set __search_custom_config__ = True on the model."
        )
    return name


@dataclass(frozen=True)
class _Spec:
    """A model's validated search settings (frozen when the class is defined)."""

    columns: tuple[tuple[str, str], ...]  # (attribute, weight)
    config: str
    config_column: str | None
    trigram: tuple[str, ...]
    custom: bool

    @classmethod
    def of(cls, model: type) -> _Spec:
        owner = model.__name__
        declared = getattr(model, "__searchable__", None)
        if isinstance(declared, Mapping):
            columns = tuple((str(k), str(v).upper()) for k, v in declared.items())
        elif isinstance(declared, Sequence) and not isinstance(declared, str):
            columns = tuple((str(k), "D") for k in declared)
        else:
            columns = ()
        if not columns:
            raise ConfigurationError(
                f"{owner} is Searchable but declares no columns: set __searchable__ = "
                f'{{"title": "A", "body": "B"}} (column -> weight A, B, C or D).'
            )
        for key, weight in columns:
            if weight not in _WEIGHTS:
                raise ConfigurationError(
                    f"{owner}.__searchable__[{key!r}] = {weight!r}: a weight is one of "
                    f"'A' (most important), 'B', 'C' or 'D'."
                )
        custom = bool(getattr(model, "__search_custom_config__", False))
        config = _check_config(getattr(model, "__search_config__", "english"), owner, custom)
        config_column = getattr(model, "__search_config_column__", None)
        trigram = getattr(model, "__search_trigram__", ()) or ()
        if isinstance(trigram, str):
            trigram = (trigram,)
        return cls(columns, config, config_column, tuple(trigram), custom)


class Searchable:
    """Mixin: a weighted, generated ``search_vector`` column with a GIN index, and search.

    Class attributes:

    ``__searchable__``
        ``{"title": "A", "body": "B"}``: the text columns and their weights (a list means
        weight ``D`` for all).
    ``__search_config__``
        The text search configuration (``"english"`` by default), checked against
        :data:`KNOWN_CONFIGS` unless ``__search_custom_config__ = True``.
    ``__search_config_column__``
        Name of a ``REGCONFIG`` column holding each row's language; the vector of a row is
        built with it (``NULL`` falls back to ``__search_config__``).
    ``__search_trigram__``
        Columns that get a ``pg_trgm`` GIN index (and the extension) for ``fuzzy=True``.
    """

    __searchable__: ClassVar[Mapping[str, str] | Sequence[str]]
    __search_config__: ClassVar[str] = "english"
    __search_config_column__: ClassVar[str | None] = None
    __search_custom_config__: ClassVar[bool] = False
    __search_trigram__: ClassVar[Sequence[str]] = ()

    if TYPE_CHECKING:
        search_vector: Mapped[str]

    def __init_subclass__(cls, **kw: Any) -> None:
        own = "__searchable__" in cls.__dict__ or not any(
            _SPEC in vars(base) for base in cls.__mro__[1:]
        )
        spec = _Spec.of(cls) if own and _declares_table(cls) else None
        if spec is not None:
            _precheck(cls, spec)
        super().__init_subclass__(**kw)
        if spec is None:
            return
        when_mapped(cls, lambda mapper: _attach(mapper, spec))

    # -- querying -------------------------------------------------------------------------
    @classmethod
    def search_match(
        cls, query: str, *, config: ConfigArg = None, prefix: bool = False
    ) -> ColumnElement[bool]:
        """``search_vector @@ <tsquery>``: the index-backed condition, to combine yourself."""
        return cls.search_vector.bool_op("@@")(tsquery(cls, query, config=config, prefix=prefix))

    @classmethod
    def search(
        cls,
        query: str,
        *,
        config: ConfigArg = None,
        prefix: bool = False,
        fuzzy: bool = False,
        sort: bool = True,
    ) -> Select[Self]:  # type: ignore[type-var, unused-ignore]  # 2.0 stubs: Select[tuple[Self]]
        """A ``select()`` of the model: rows matching ``query``, best match first.

        ``query`` is any user text (web search syntax: ``"exact phrase"``, ``or``,
        ``-exclude``); it is never a syntax error. ``prefix=True`` matches word prefixes for
        search-as-you-type. ``fuzzy=True`` also returns rows whose ``__search_trigram__``
        columns are word-similar to the query (typos), after the full-text matches.
        ``config`` overrides the query's configuration (a name or a column).
        """
        tsq = tsquery(cls, query, config=config, prefix=prefix)
        vector = cls.search_vector
        condition: ColumnElement[bool] = vector.bool_op("@@")(tsq)
        order: list[ColumnElement[Any]] = [func.ts_rank_cd(vector, tsq, type_=Float).desc()]
        if fuzzy:
            columns = _trigram_columns(cls)
            text = literal(_clean(query), String)
            condition = or_(condition, *(text.bool_op("<%")(c) for c in columns))
            order.append(func.greatest(*(func.word_similarity(text, c) for c in columns)).desc())
        stmt = select(cls).where(condition)
        return stmt.order_by(*order) if sort else stmt  # type: ignore[return-value, unused-ignore]


#: ``Index.info`` key of an index a pattern adds to a table (Alembic never renders index info)
TOOLKIT_INDEX = "sa_patterns.toolkit_index"


def _declares_table(cls: type) -> bool:
    # Abstract classes and single-table subclasses have no table of their own.
    if cls.__dict__.get("__abstract__", False):
        return False
    return "__tablename__" in cls.__dict__ or "__table__" in cls.__dict__


def _declared_on(klass: type, name: str) -> bool:
    return name in vars(klass) or name in inspect_module.get_annotations(klass)


def _declared(cls: type, name: str) -> bool:
    return any(_declared_on(k, name) for k in cls.__mro__)


def _precheck(cls: type, spec: _Spec) -> None:
    """Fail before mapping, so a broken class never reaches the registry."""
    names = [k for k, _ in spec.columns] + list(spec.trigram)
    if spec.config_column:
        names.append(spec.config_column)
    for name in names:
        if not _declared(cls, name):
            raise ConfigurationError(
                f"{cls.__name__}: search column {name!r} is not an attribute of the model. "
                f"Declare it (e.g. {name}: Mapped[str]) or remove it from the search settings."
            )
    if _declared(cls, SEARCH_VECTOR) and not any(_SPEC in vars(k) for k in cls.__mro__):
        for k in cls.__mro__:
            if k is Searchable:
                break
            if _declared_on(k, SEARCH_VECTOR):
                raise ConfigurationError(
                    f"{cls.__name__} declares {SEARCH_VECTOR!r} itself; Searchable creates that "
                    f"generated column. Remove the declaration."
                )


def _column(cls: type, mapper: Mapper[Any], key: str, *, text: bool) -> Column[Any]:
    prop = mapper.get_property(key) if mapper.has_property(key) else None
    column = prop.columns[0] if isinstance(prop, ColumnProperty) and prop.columns else None
    if not isinstance(column, Column) or column.table is not mapper.local_table:
        raise ConfigurationError(
            f"{cls.__name__}.{key} is not a column of {cls.__name__}'s own table; search "
            f"columns must be plain columns (use a relationship search for related tables)."
        )
    # a TypeDecorator over text (SQLModel's AutoString for a str field) stores text too
    stored = column.type.impl_instance if isinstance(column.type, TypeDecorator) else column.type
    if text and (not isinstance(stored, String) or isinstance(stored, Enum)):
        raise ConfigurationError(
            f"{cls.__name__}.{key} is {column.type!r}; full-text search reads text columns "
            f"(String, Text, Unicode). Add a text column or a computed text column instead."
        )
    return column


def _attach(mapper: Mapper[Any], spec: _Spec) -> None:
    """Add the generated column, its GIN index and the trigram indexes to the mapped class."""
    cls = mapper.class_
    table = own_table(mapper)
    if table is None:
        raise ConfigurationError(
            f"{cls.__name__}: Searchable adds a generated column to the model's own table; "
            "map the class to a Table (not a select or a parent's single table)."
        )
    reads = []
    config_column = None
    if spec.config_column:
        lang = _column(cls, mapper, spec.config_column, text=False)
        if not isinstance(lang.type, REGCONFIG):
            raise ConfigurationError(
                f"{cls.__name__}.{spec.config_column} is {lang.type!r}; __search_config_column__ "
                f"must be a REGCONFIG column (mapped_column(postgresql.REGCONFIG)): a text "
                f"column cast to regconfig is not immutable, so PostgreSQL refuses it in a "
                f"generated column."
            )
        config_column = lang.name
        reads.append(lang.name)
    weights = []
    for key, weight in spec.columns:
        column = _column(cls, mapper, key, text=True)
        reads.append(column.name)
        weights.append((column.name, weight))
    vector: Column[Any] = Column(
        SEARCH_VECTOR,
        TSVECTOR,
        Computed(search_vector_sql(weights, spec.config, config_column), persisted=True),
        info={GENERATED_INFO: tuple(reads), SEARCH_INFO: (tuple(weights), spec.config, config_column)},
    )
    table.append_column(vector)
    mapper.add_property(SEARCH_VECTOR, deferred(vector))
    Index(ident(f"ix_{table.name}", SEARCH_VECTOR), vector, postgresql_using="gin")
    for key in spec.trigram:
        column = _column(cls, mapper, key, text=True)
        Index(
            ident(f"ix_{table.name}", f"{column.name}_trgm"),
            column,
            postgresql_using="gin",
            postgresql_ops={column.name: "gin_trgm_ops"},
            info={TOOLKIT_INDEX: True},  # built CONCURRENTLY on a table that exists (online_plan)
        )
    if spec.trigram:
        register(table.metadata, Extension("pg_trgm", schema="public"))
    setattr(cls, _SPEC, spec)


def search_vector_sql(
    weights: Sequence[tuple[str, str]], config: str, config_column: str | None = None, *, row: str = ""
) -> str:
    """The ``search_vector`` expression over the columns ``weights`` names (``(column,
    weight)`` pairs): the generated column's, and with ``row="NEW."`` the adoption trigger's,
    so both compute the very same vector."""
    regconfig = f"{quote_literal(config)}::regconfig"
    if config_column:
        regconfig = f"COALESCE({row}{quote(config_column)}, {regconfig})"
    return " || ".join(
        f"setweight(to_tsvector({regconfig}, COALESCE({row}{quote(name)}, '')), {quote_literal(weight)})"
        for name, weight in weights
    )


# -- the trigger-kept form (a search vector adopted online on a populated table) ---------------

#: the trigger's type bits (pg_trigger.tgtype): FOR EACH ROW, BEFORE, INSERT, UPDATE
_KEPT_TGTYPE = 1 | 2 | 4 | 16
_MARKER = "-- sa_patterns: search_vector "
_KEPT = sql_text(
    """
    SELECT a.attgenerated, f.prosrc, t.tgenabled, t.tgtype = :tgtype AND t.tgfoid = f.oid,
           ARRAY(SELECT att.attname::text FROM unnest(t.tgattr::int2[]) k(n)
                 JOIN pg_catalog.pg_attribute att ON att.attrelid = t.tgrelid AND att.attnum = k.n
                 ORDER BY 1)
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = :column AND NOT a.attisdropped
    LEFT JOIN pg_catalog.pg_proc f ON f.proname = :name AND f.pronamespace = c.relnamespace AND f.pronargs = 0
    LEFT JOIN pg_catalog.pg_trigger t ON t.tgrelid = c.oid AND t.tgname = :name
    WHERE c.oid = to_regclass(:table)
    """
)


def kept_vector_function(weights: Sequence[tuple[str, str]], config: str, config_column: str | None) -> str:
    """The body of the trigger function that keeps a plain ``search_vector`` (what
    ``pg_proc.prosrc`` holds): the generated column's expression on ``NEW``, and the settings it
    was built from as a marker comment (what a later change is reversed to)."""
    marker = json.dumps({"weights": [list(w) for w in weights], "config": config, "config_column": config_column})
    expression = search_vector_sql(weights, config, config_column, row="NEW.")
    return f"\nBEGIN\n  {_MARKER}{marker}\n  NEW.{quote(SEARCH_VECTOR)} := {expression};\n  RETURN NEW;\nEND\n"


@dataclass(frozen=True)
class KeptVector:
    """What the catalog holds for a table's ``search_vector`` (see :func:`kept_vector`)."""

    generated: bool
    name: str  # of the trigger and of its function
    source: str | None  # the function's body (None: no such function)
    enabled: bool | None  # None: no such trigger
    shape_ok: bool  # BEFORE INSERT OR UPDATE, FOR EACH ROW, calling that function
    columns: tuple[str, ...]  # the trigger's UPDATE OF columns

    @property
    def ours(self) -> bool:
        """Whether the toolkit keeps this plain column (its function exists, with its marker):
        a plain vector some other tool keeps is not (autogenerate replaces it, generated)."""
        return not self.generated and self.source is not None and _MARKER in self.source

    def settings(self) -> tuple[tuple[tuple[str, str], ...], str, str | None] | None:
        """The ``(weights, config, config_column)`` the function's marker records, if ours."""
        if not self.ours:
            return None
        try:
            found = json.loads(str(self.source).split(_MARKER, 1)[1].split("\n", 1)[0])
            weights = tuple((str(c), str(w)) for c, w in found["weights"])
            return weights, str(found["config"]), found["config_column"]
        except (ValueError, KeyError, TypeError):
            return None

    def problem(self, weights: Sequence[tuple[str, str]], config: str, config_column: str | None) -> str | None:
        """Why this plain column does not keep the vector these settings describe, or None."""
        if self.generated:
            return None
        if self.enabled is None:
            return f"a plain tsvector column without the trigger {self.name} that keeps it: rows written get no vector"
        if not self.enabled:
            return f"the trigger {self.name} that keeps it is disabled: rows written keep a stale vector"
        reads = sorted([*([config_column] if config_column else []), *(c for c, _ in weights)])
        if not self.shape_ok or sorted(self.columns) != reads:
            return (f"the trigger {self.name} is not the toolkit's (BEFORE INSERT OR UPDATE OF "
                    f"{', '.join(reads)} FOR EACH ROW EXECUTE FUNCTION {self.name}())")
        if self.source != kept_vector_function(weights, config, config_column):
            return f"the trigger {self.name} computes another expression than the model's"
        return None


def kept_vector(connection: Connection, schema: str | None, table: str) -> KeptVector | None:
    """The table's ``search_vector`` as the catalog has it (None: no such column), with the
    trigger of the online adoption and its function (both ``<table>_search_vector``)."""
    name = ident(table, SEARCH_VECTOR)
    row = connection.execute(_KEPT, {"column": SEARCH_VECTOR, "name": name, "tgtype": _KEPT_TGTYPE,
                                     "table": qualified(schema, table)}).first()
    if row is None:
        return None
    generated, source, enabled, shape_ok, columns = row
    return KeptVector(
        generated=generated == "s", name=name, source=source,
        enabled=None if enabled is None else enabled != "D",
        shape_ok=bool(shape_ok), columns=tuple(columns or ()),
    )


def _spec(model: Any) -> _Spec:
    spec = getattr(model, _SPEC, None)
    if not isinstance(spec, _Spec):
        raise ConfigurationError(
            f"{getattr(model, '__name__', model)!r} is not a mapped Searchable model; add the "
            f"Searchable mixin and __searchable__ to it."
        )
    return spec


def _trigram_columns(model: Any) -> list[QueryableAttribute[Any]]:
    spec = _spec(model)
    if not spec.trigram:
        raise ConfigurationError(
            f"{model.__name__}.search(fuzzy=True) needs trigram columns: set "
            f'__search_trigram__ = ("title",) on the model (adds pg_trgm and a GIN index).'
        )
    return [getattr(model, key) for key in spec.trigram]


def _clean(query: object) -> str:
    """Any input → text PostgreSQL accepts: no NUL, valid UTF-8, bounded length."""
    text = "" if query is None else str(query)
    text = text[:MAX_QUERY_CHARS].replace("\x00", " ")
    return text.encode("utf-8", "replace").decode("utf-8")


def _prefix_query(query: object) -> str:
    # Only word characters survive, so the to_tsquery() syntax can never be broken.
    words = _WORD.findall(_clean(query))[:MAX_PREFIX_WORDS]
    return " & ".join(f"{w[:_MAX_WORD]}:*" for w in words)


class _RegConfig(TypeDecorator[str]):
    """A ``regconfig`` parameter that can also be rendered inline (``literal_binds``, e.g.
    to EXPLAIN a search), as the quoted name cast to ``regconfig``."""

    impl = REGCONFIG
    cache_ok = True

    def literal_processor(self, dialect: Dialect) -> Callable[[Any], str]:
        return lambda value: f"{quote_literal(str(value))}::regconfig"


def _config_expr(model: Any, config: ConfigArg) -> ColumnElement[Any]:
    spec = _spec(model)
    if isinstance(config, ColumnElement):
        return config
    if isinstance(config, QueryableAttribute):
        expr: ColumnElement[Any] = config.expression
        return expr
    name = spec.config if config is None else _check_config(config, model.__name__, spec.custom)
    # Typed as regconfig (not text cast to it, which is only STABLE), so that PostgreSQL can
    # fold websearch_to_tsquery(config, text) into a constant.
    return bindparam(None, name, type_=_RegConfig())


def tsquery(
    model: Any,
    query: str,
    *,
    config: ConfigArg = None,
    prefix: bool = False,
) -> ColumnElement[Any]:
    """The ``tsquery`` for ``query`` with the model's configuration (or ``config``).

    ``websearch_to_tsquery`` by default; with ``prefix=True``, the words of the text joined
    with ``&``, each a prefix (``'postg':*``). The text is a bound parameter either way.

    Both arguments are typed parameters, so the planner folds the call into a constant
    tsquery: it then estimates the match from the GIN statistics, and ``ts_rank_cd`` does not
    re-parse the query for every matching row.
    """
    cfg = _config_expr(model, config)
    if prefix:
        return func.to_tsquery(cfg, bindparam(None, _prefix_query(query), type_=String), type_=TSQUERY)
    return func.websearch_to_tsquery(cfg, bindparam(None, _clean(query), type_=String), type_=TSQUERY)


def rank(
    model: Any,
    query: str,
    *,
    config: ConfigArg = None,
    prefix: bool = False,
    normalization: int = 0,
) -> ColumnElement[float]:
    """``ts_rank_cd(search_vector, tsquery)`` with the same configuration as the search.

    ``normalization`` is ts_rank_cd's bit mask (e.g. ``1``: divide by 1 + log(length)).
    """
    tsq = tsquery(model, query, config=config, prefix=prefix)
    args: list[Any] = [model.search_vector, tsq]
    if normalization:
        args.append(bindparam(None, int(normalization)))
    return func.ts_rank_cd(*args, type_=Float)


def _option(value: str) -> str:
    # ts_headline options are "Name=value, ..."; a double-quoted value may hold any character.
    return '"' + value.replace('"', '""') + '"'


def headline(
    column: QueryableAttribute[Any],
    query: str,
    *,
    config: ConfigArg = None,
    prefix: bool = False,
    start_sel: str = "<b>",
    stop_sel: str = "</b>",
    max_words: int | None = None,
    min_words: int | None = None,
    short_word: int | None = None,
    max_fragments: int | None = None,
    fragment_delimiter: str | None = None,
    highlight_all: bool = False,
) -> ColumnElement[str]:
    """``ts_headline``: ``column``'s text with the query's matches wrapped in tags.

    Uses the same configuration and tsquery as :meth:`Searchable.search`. ``ts_headline``
    reads the whole document, so apply it to the rows of a page, not to a whole table.
    Tags are not HTML-escaped, and neither is the text: escape the text before display.
    """
    model = getattr(column, "class_", None)
    if model is None:
        raise ConfigurationError("headline() takes a model attribute, e.g. headline(Article.body, q).")
    tsq = tsquery(model, query, config=config, prefix=prefix)
    options = {"StartSel": _option(start_sel), "StopSel": _option(stop_sel)}
    for name, number in (
        ("MaxWords", max_words),
        ("MinWords", min_words),
        ("ShortWord", short_word),
        ("MaxFragments", max_fragments),
    ):
        if number is not None:
            options[name] = str(int(number))
    if fragment_delimiter is not None:
        options["FragmentDelimiter"] = _option(fragment_delimiter)
    if highlight_all:
        options["HighlightAll"] = "true"
    text = ", ".join(f"{k}={v}" for k, v in options.items())
    return func.ts_headline(
        _config_expr(model, config), column, tsq, bindparam(None, text, type_=String), type_=String
    )
