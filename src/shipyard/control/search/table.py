"""One kind's records as Search reads them: rows by name, record members by column, and the
properties queries have read, converted, kept in step with the rows.

A :class:`Table` is what :mod:`index` keeps per kind; :class:`TableSource` is the
``expression.Source`` a query runs over. A property (``HyperParameters.lr`` read as a
number, say) is derived from its member's column once and then only for the rows that
change (:class:`Derived`); one with at most one value per record is a plain list of values,
so 10,000 records cost the garbage collector one object, not 10,000.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shipyard import kinds
from shipyard.control.search.expression import Convert
from shipyard.control.search.fields import Field

__all__ = ["Derived", "Table", "TableSource"]


class Derived:
    """One property's converted values, one entry per row of a table."""

    def __init__(self, field: Field, convert: Convert, column: list[Any],
                 encoded: bool = False) -> None:
        self.field = field
        self.convert = convert
        #: The column holds JSON text (objects and arrays), decoded here as it is read.
        self.encoded = encoded
        self.single: list[Any] | None = None
        #: A tuple per row: of atoms (and tuples of them, :mod:`expression`'s nested items),
        #: so none of it is tracked by the garbage collector, whose full collections would
        #: otherwise walk 10,000 lists each time.
        self.values: list[tuple[Any, ...]] | None = None
        self.sorts: dict[bool, list[Any]] = {}
        self.rebuild(column)

    def row(self, value: Any) -> tuple[Any, ...]:
        if self.encoded and isinstance(value, str):
            value = json.loads(value)
        return tuple(got for got in map(self.convert, self.field.extract(value))
                     if got is not None)

    def rebuild(self, column: list[Any]) -> None:
        values = [self.row(value) for value in column]
        self.sorts = {}
        if any(len(found) > 1 for found in values):
            self.single, self.values = None, values
        else:
            self.single, self.values = [found[0] if found else None for found in values], None

    def update(self, column: list[Any], rows: list[int]) -> None:
        """Read ``rows`` again from ``column``."""
        self.sorts = {}
        if self.single is not None:
            single = self.single
            for index in rows:
                found = self.row(column[index])
                if len(found) > 1:
                    self.rebuild(column)
                    return
                single[index] = found[0] if found else None
        elif self.values is not None:
            for index in rows:
                self.values[index] = self.row(column[index])

    def remap(self, previous: list[int | None], column: list[Any], fresh: list[int]) -> None:
        """The rows were renumbered: row ``i`` was row ``previous[i]`` (None: new); then
        ``fresh`` rows are read again."""
        if self.single is not None:
            old_single = self.single
            self.single = [None if at is None else old_single[at] for at in previous]
        elif self.values is not None:
            old_values = self.values
            self.values = [() if at is None else old_values[at] for at in previous]
        self.update(column, fresh)

    def sort_keys(self, descending: bool) -> list[Any]:
        if self.single is not None:
            return self.single
        keys = self.sorts.get(descending)
        if keys is None:
            pick = max if descending else min
            keys = self.sorts[descending] = [pick(found) if found else None
                                             for found in self.values or []]
        return keys


class Table:
    """One kind's rows, in name order, and the record members read so far."""

    def __init__(self, kind: str, resource: str) -> None:
        self.kind = kind
        self.resource = resource
        self.arn_member = kinds.get(kind).arn_field
        self.names: list[str] = []
        self.rowids: list[int] = []
        self._position: tuple[list[int], dict[int, int]] | None = None
        #: rowid -> (name, status, last_modified_time) as last read.
        self.signature: dict[int, tuple[str, str, float]] = {}
        #: A cheap summary of the rows (count, rowids, times, statuses) as last read.
        self.summary: tuple[Any, ...] | None = None
        #: The latest last_modified_time of the rows as last read, and when that was.
        self.latest = 0.0
        self.looked_at = 0.0
        self.columns: dict[str, list[Any]] = {}
        #: Members whose column holds JSON text (the record's objects and arrays).
        self.encoded: frozenset[str] = frozenset()
        self.derived: dict[tuple[str, str], Derived] = {}
        #: Bumped whenever a row or a value changes: the results of queries are kept by it.
        self.generation = 0
        self.tags_version = -1
        #: Members read from elsewhere than the record (``Tags``, :mod:`dashboard`'s).
        self.external: frozenset[str] = frozenset({"Tags"})
        #: The data version each of :mod:`dashboard`'s members was last read at.
        self.joined_versions: dict[str, int] = {}

    def position(self) -> dict[int, int]:
        """rowid -> row number, kept until the rows are renumbered."""
        if self._position is None or self._position[0] is not self.rowids:
            self._position = (self.rowids, {rowid: i for i, rowid in enumerate(self.rowids)})
        return self._position[1]

    def changed(self, member: str, rows: list[int]) -> None:
        """``rows`` of ``member``'s column were read again: derived properties follow."""
        for derived in self.derived.values():
            if derived.field.member == member:
                derived.update(self.columns[member], rows)

    def replaced(self, member: str) -> None:
        """``member``'s column was read whole again (tags)."""
        self.derived = {key: d for key, d in self.derived.items() if d.field.member != member}


class TableSource:
    """A table as a query reads it (``expression.Source``)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.size = len(table.names)

    def derived(self, field: Field, convert: Convert) -> Derived:
        key = (field.name, convert.__name__)
        found = self.table.derived.get(key)
        if found is None:
            found = Derived(field, convert, self.table.columns[field.member],
                            field.member in self.table.encoded)
            self.table.derived[key] = found
        return found

    def values(self, field: Field, convert: Convert) -> Sequence[Sequence[Any]]:
        derived = self.derived(field, convert)
        if derived.single is not None:
            return [() if got is None else (got,) for got in derived.single]
        return derived.values or []

    def single(self, field: Field, convert: Convert) -> list[Any] | None:
        return self.derived(field, convert).single

    def sort_keys(self, field: Field, convert: Convert, descending: bool) -> list[Any]:
        return self.derived(field, convert).sort_keys(descending)
