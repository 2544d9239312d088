"""A statement of idp/thin_reads.py compiled once for one dialect: its SQL, how its parameters
are bound and how its rows are converted, as the engine would for the same Core statement."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Table, bindparam, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import TextualSelect

#: The row of a thin read: a named tuple of the statement's selected columns by their keys.
Row = Any
#: What a thin statement may be: a SELECT, or an INSERT, UPDATE or DELETE (with RETURNING or not).
Statement = Select[Any] | UpdateBase | TextualSelect


@dataclass(slots=True)
class PreparedStatement:
    """A statement compiled for one dialect, with what converting its parameters and rows needs."""

    sql: str
    #: The bind names in the order of the SQL's placeholders (a positional paramstyle, SQLite's
    #: ``qmark``), or None for a named one (psycopg's ``pyformat``).
    positions: tuple[str, ...] | None
    #: Every bind's value when the caller gives none (literal values in the statement).
    defaults: dict[str, Any]
    bind_processors: Mapping[str, Callable[[Any], Any]]
    result_types: list[Any]
    row_type: Any
    #: Per column, its type's result processor or None; made at the first result (the driver's
    #: type codes in ``cursor.description`` choose some processors).
    result_processors: list[Callable[[Any], Any] | None] | None = field(default=None)

    def parameters(self, given: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        values = {**self.defaults, **given} if self.defaults else dict(given)
        for name, process in self.bind_processors.items():
            values[name] = process(values[name])
        if self.positions is None:
            return values
        return tuple(values[name] for name in self.positions)

    def rows(self, raw: list[Any]) -> list[Row]:
        processors = self.result_processors
        assert processors is not None, "made at the first result"
        if not any(processors):
            return [self.row_type._make(values) for values in raw]
        return [
            self.row_type._make(
                [
                    value if p is None else p(value)
                    for p, value in zip(processors, values, strict=True)
                ]
            )
            for values in raw
        ]

    def make_result_processors(self, description: Any) -> None:
        self.result_processors = [
            type_and_dialect[0].result_processor(type_and_dialect[1], column[1])
            for type_and_dialect, column in zip(self.result_types, description, strict=True)
        ]


def compile_statement(statement: Statement, dialect: Dialect) -> PreparedStatement:
    """``statement`` compiled for ``dialect``; refused when a thin statement could not bind it
    as the engine would."""
    compiled = statement.compile(dialect=dialect)
    binds = compiled.binds
    if any(bind.expanding or bind.literal_execute for bind in binds.values()):
        raise ValueError("thin reads take no expanding or literal-execute parameters")
    if compiled.escaped_bind_names:
        raise ValueError("thin reads take bind names the dialect needs no escaping for")
    # A write's columns are those of its RETURNING, if any.
    selected = statement.exported_columns
    keys = list(map(str, selected.keys()))
    if len(set(keys)) != len(keys):
        raise ValueError(f"thin reads need distinct column keys (label them): {keys}")
    processors = {}
    for name, bind in binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            processors[name] = process
    defaults = {
        name: bind.effective_value
        for name, bind in binds.items()
        if bind.value is not None or bind.callable is not None
    }
    return PreparedStatement(
        sql=compiled.string,
        positions=tuple(compiled.positiontup or ()) if compiled.positional else None,
        defaults=defaults,
        bind_processors=processors,
        result_types=[(column.type.dialect_impl(dialect), dialect) for column in selected],
        row_type=namedtuple("Row", keys, rename=True),
    )


# -- inserts sent together ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Inserts:
    """Rows for one table, each naming every column it sets (the same columns each): one INSERT
    of a multi-row ``VALUES``. Nothing is left to a Python-side column default, which a thin
    statement could not fill in (``inserts_together`` refuses such a table)."""

    table: Any  # a Table
    rows: tuple[Mapping[str, Any], ...]


def inserts_together(
    parts: Sequence[Inserts], *, one_statement: bool
) -> list[tuple[UpdateBase, Mapping[str, Any]]]:
    """The statements, with their parameters, that insert ``parts`` in their order.

    With ``one_statement`` (PostgreSQL), one statement: the earlier parts are data-modifying
    ``WITH`` clauses of the last (PostgreSQL's manual, 7.8.4 "Data-Modifying Statements in
    WITH": each runs exactly once and to completion, in the statement's one snapshot, and a
    foreign key between them is checked at the statement's end, so a grant and the code that
    names it go in one). One round trip where there were several; SQLite has no data-modifying
    ``WITH``, and there each part is its own statement, as before. The statements are built once
    per shape (tables, columns, row counts) and kept, so each is compiled once per dialect
    (idp.thin_reads)."""
    shape = tuple((part.table, tuple(part.rows[0]), len(part.rows)) for part in parts)
    statements = _TOGETHER.get((one_statement, shape))
    if statements is None:
        statements = _TOGETHER[one_statement, shape] = _build_together(shape, one_statement)
    if one_statement:
        values = {
            f"p{index}_{n}_{key}": value
            for index, part in enumerate(parts)
            for n, row in enumerate(part.rows)
            for key, value in row.items()
        }
        return [(statements[0], values)]
    return [
        (statement, part.rows[0] if len(part.rows) == 1 else _numbered(part.rows))
        for statement, part in zip(statements, parts, strict=True)
    ]


def _numbered(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {f"{key}_{n}": value for n, row in enumerate(rows) for key, value in row.items()}


def _build_together(shape: Sequence[tuple[Any, tuple[str, ...], int]], one: bool) -> list[Any]:
    """The statements of ``inserts_together`` for ``shape``. Their bind names: ``p{part}_{row}_
    {column}`` in the one statement; apart, the column's key for a row alone, ``{column}_{row}``
    for several."""

    def name(index: int, n: int, key: str, count: int) -> str:
        return f"p{index}_{n}_{key}" if one else key if count == 1 else f"{key}_{n}"

    built = []
    for index, (table, keys, count) in enumerate(shape):
        missing = [
            column.key
            for column in table.c
            if column.key not in keys and (column.default is not None or column.onupdate)
        ]
        if missing:
            raise ValueError(f"{table.name}: rows must name {missing} (Python-side defaults)")
        # Typed by hand: SQLAlchemy types only the first row's parameters of a multi-row VALUES.
        built.append(insert(table).values([
            {key: bindparam(name(index, n, key, count), type_=table.c[key].type) for key in keys}
            for n in range(count)
        ]))  # fmt: skip
    if not one or len(built) == 1:
        return built
    *earlier, last = built
    return [last.add_cte(*(statement.cte(f"w{i}") for i, statement in enumerate(earlier)))]


#: ``inserts_together``'s statements by shape. A handful of shapes exist (idp's callers).
_TOGETHER: dict[tuple[Any, ...], list[Any]] = {}


def insert_unless_exists(
    table: Table, key: Column[Any], returning: Column[Any] | None = None
) -> dict[str, Any]:
    """``INSERT ... ON CONFLICT (key) DO NOTHING`` into ``table``, built once per dialect (by
    ``Dialect.name``): the key decides between two writers of one row, the second inserting
    nothing (and, with ``returning``, given no row back: it knows it came second)."""
    built: dict[str, Any] = {}
    for name, insert_of in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert)):
        statement = insert_of(table).on_conflict_do_nothing(index_elements=[key])
        built[name] = statement if returning is None else statement.returning(returning)
    return built
