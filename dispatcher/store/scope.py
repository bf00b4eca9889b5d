"""A scoped message's audience, narrowed in the database: subscribers whose scope cannot match are
never read.

A subscriber's `components` and `regions` are JSON arrays (empty: everything). Reading every
subscriber of every tier to find the few a scoped message reaches cost a 10k-subscriber planning
pass per scoped broadcast, JSON parsing most of it. This is a prefilter, never the rule: it keeps
every row whose array is null, empty, not an array, or shares an element with the message's, and
domain/audience.py's `in_scope` still decides on each row read. So it may keep too much, never too
little.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Text, bindparam, exists, func, literal_column, or_, select, text, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from dispatcher.store.bulk import on_postgres


def may_share(session: Session, column: ColumnElement[Any], values: Sequence[str]) -> ColumnElement[bool]:
    """True where the JSON array `column` may share an element with `values` (any row, if `values`
    is empty: a message that names no scope reaches everyone)."""
    if not values:
        return true()
    if on_postgres(session):  # JSONB: `?|` is "holds any of these strings", through its GIN-able operator
        wanted = bindparam(None, list(values), type_=postgresql.ARRAY(Text))
        return or_(
            column.is_(None),
            column == text("'[]'::jsonb"),
            func.jsonb_typeof(column) != "array",
            column.op("?|")(wanted),
        )
    each = func.json_each(column).table_valued("value")
    return or_(
        column.is_(None),
        func.json_array_length(column) == 0,  # also 0 for what is not an array
        exists(select(literal_column("1")).select_from(each).where(each.c.value.in_(list(values)))),
    )
