"""A statement of idp/thin_reads.py compiled once for one dialect: its SQL, how its parameters
are bound and how its rows are converted, as the engine would for the same Core statement."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
