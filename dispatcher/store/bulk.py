"""Set-based SQL that stays fast at 100k rows: one array parameter instead of thousands of values.

On PostgreSQL a statement with thousands of placeholders costs more to prepare than to run: psycopg
re-parses every query over 4 kB, which took 1.7 s of a 10k tier's planning and a fifth of each
batch's claim and record. So PostgreSQL gets `= ANY(:ids)` and `INSERT ... SELECT unnest(...)`, one
array per column. SQLite, in-process, runs IN lists and executemany at C speed and keeps them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    Table,
    Text,
    any_,
    bindparam,
    func,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def on_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def id_in(session: Session, column: ColumnElement[Any], ids: Collection[int]) -> ColumnElement[bool]:
    """`column IN ids`, as one array parameter on PostgreSQL."""
    if on_postgres(session):
        return column == any_(bindparam(None, list(ids), type_=postgresql.ARRAY(BigInteger)))
    return column.in_(list(ids))


def id_and_text_in(
    session: Session,
    columns: tuple[ColumnElement[Any], ColumnElement[Any]],
    pairs: Collection[tuple[int, str]],
) -> ColumnElement[bool]:
    """`(id, text) IN pairs`: a compare-and-set on each row's own value (its provider id), as two
    unnested arrays on PostgreSQL."""
    if on_postgres(session):
        ids = bindparam(None, [p[0] for p in pairs], type_=postgresql.ARRAY(BigInteger))
        texts = bindparam(None, [p[1] for p in pairs], type_=postgresql.ARRAY(Text))
        return tuple_(*columns).in_(select(func.unnest(ids), func.unnest(texts)))
    return tuple_(*columns).in_(list(pairs))


def insert_ignoring(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    unique: list[str],
    returning: Sequence[ColumnElement[Any]] = (),
) -> list[Row[Any]]:
    """Inserts `rows`, skipping any that would repeat the `unique` key; returns the `returning`
    columns of the rows it inserted (none of those it skipped)."""
    if not rows:
        return []
    columns = sorted({column for row in rows for column in row})
    if on_postgres(session):
        values = select(*(_column_values(table, c, rows) for c in columns))
        stmt = (
            postgresql.insert(table)
            .from_select(columns, values)
            .on_conflict_do_nothing(index_elements=unique)
        )
        if not returning:
            session.execute(stmt)
            return []
        return list(session.execute(stmt.returning(*returning)))
    uniform = [{c: row.get(c) for c in columns} for row in rows]  # executemany wants one shape
    stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=unique)
    if not returning:
        session.execute(stmt, uniform)
        return []
    return list(session.execute(stmt.returning(*returning), uniform))


def _column_values(table: Table, column: str, rows: Sequence[dict[str, Any]]) -> ColumnElement[Any]:
    """One column of `rows` for INSERT ... SELECT: an unnested array, or a single value when every
    row has the same one (timestamps, broadcast, tier: no need to send and parse it 5,000 times)."""
    values = [row.get(column) for row in rows]
    if all(v == values[0] for v in values):
        return bindparam(f"u_{column}", values[0], type_=table.c[column].type)
    return func.unnest(bindparam(f"u_{column}", values, type_=postgresql.ARRAY(table.c[column].type)))


def update_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Sets per-row values: each dict has the row's `id` and the columns to set. One statement per
    set of columns (UPDATE ... FROM unnest on PostgreSQL) instead of one per row."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        by_columns.setdefault(tuple(sorted(c for c in row if c != "id")), []).append(row)
    for columns, group in by_columns.items():
        if not columns:
            continue
        if on_postgres(session):
            ids = bindparam("u_ids", [r["id"] for r in group], type_=postgresql.ARRAY(BigInteger))
            values = select(
                func.unnest(ids).label("id"), *(_column_values(table, c, group).label(c) for c in columns)
            ).subquery("v")
            stmt = update(table).where(table.c.id == values.c.id).values({c: values.c[c] for c in columns})
            session.execute(stmt)
        else:
            stmt = (
                update(table)
                .where(table.c.id == bindparam("b_id"))
                .values({c: bindparam(c) for c in columns})
            )
            session.connection().execute(
                stmt, [{"b_id": r["id"], **{c: r[c] for c in columns}} for r in group]
            )


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Appends `rows` in one statement: INSERT ... SELECT unnest(...) on PostgreSQL (a column with
    one value for every row is sent once), executemany on SQLite. A column that is None in every
    row is left NULL rather than bound once per row. Constant Python-side defaults (`default=0`) are
    filled in; a column whose default is computed (a time) must be given."""
    if not rows:
        return
    columns = sorted({column for row in rows for column, value in row.items() if value is not None})
    rows = _with_scalar_defaults(table, rows, columns)
    columns = sorted({*columns, *rows[0]})
    if on_postgres(session):
        values = select(*(_column_values(table, c, rows) for c in columns))
        session.execute(postgresql.insert(table).from_select(columns, values))
        return
    # executemany straight on the driver, each column's value converted once when it is the same in
    # every row (the time, the kind): SQLAlchemy's per-row parameter handling was most of the cost.
    dialect = session.get_bind().dialect
    columns = [c.name for c in table.columns if c.name in columns]  # the statement's own order
    sql = str(sqlite.insert(table).values({c: bindparam(c) for c in columns}).compile(dialect=dialect))
    converters = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
    values = []
    for c, convert in zip(columns, converters, strict=True):
        raw = [row.get(c) for row in rows]
        if all(v == raw[0] for v in raw):
            values.append([convert(raw[0]) if convert else raw[0]] * len(raw))
        else:
            values.append([convert(v) if convert else v for v in raw])
    session.connection().exec_driver_sql(sql, list(zip(*values, strict=True)))


def _with_scalar_defaults(
    table: Table, rows: Sequence[dict[str, Any]], given: list[str]
) -> list[dict[str, Any]]:
    """`rows` with every constant Python-side default the rows leave out: the compiled INSERT names
    those columns, so a row without them would bind too few values (a column added later, with a
    default, must not break every bulk insert that predates it)."""
    missing = {
        c.name: c.default.arg  # type: ignore[union-attr]
        for c in table.columns
        if c.name not in given and c.default is not None and c.default.is_scalar
    }
    if not missing:
        return list(rows)
    return [{**missing, **row} for row in rows]
