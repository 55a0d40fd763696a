"""A Search request compiled once into a predicate over columns and a sort order.

``SearchExpression`` (botocore's model and the Search API reference): ``Filters``
(``Name``, ``Operator``, ``Value``), ``NestedFilters`` (one item of a list satisfies all of
its filters), ``SubExpressions``, joined by ``Operator`` ``And`` (the default) or ``Or``; at
least one of the three in every expression, at most 50 of them in all, and one ``Contains``
("'CONTAINS' operator usage limit of 1 exceeded."). A ``Value`` without an ``Operator`` means
``Equals``. Text properties take ``Equals``, ``NotEquals``, ``Contains`` and ``In`` (a comma
separated list); numbers and timestamps (ISO 8601 or epoch seconds) the comparisons;
hyperparameters compare as numbers against a numeric value (as integers against an integer
one) and as text otherwise; ``Exists`` and ``NotExists`` take any property. A property with
several values (a list's items) matches when one of them does; ``NotEquals`` when none equals.

The compiled query reads records by column (a :class:`Source`: each property's values, one
entry per record, converted once and kept while the records do not change): a filter is one
comprehension over a column, ``And`` and ``Or`` intersect and join sets of row numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from shipyard.control.search import fields
from shipyard.control.search.fields import (
    BOOLEAN,
    HYPERPARAMETER,
    NUMBER,
    OBJECT,
    TEXT,
    TIME,
    Field,
)
from shipyard.errors import ValidationError

#: Reads a record's value for a comparison: the value, or None where it cannot take part.
Convert = Callable[[Any], Any]
Test = Callable[[Sequence[Any]], bool]


class Source(Protocol):
    """The records a query runs over, by column (the index)."""

    size: int

    def values(self, field: Field, convert: Convert) -> Sequence[Sequence[Any]]:
        """Each record's values of ``field``, converted, those converted to None left out."""

    def single(self, field: Field, convert: Convert) -> list[Any] | None:
        """Each record's one value (None: none), or None when some record has several."""

    def sort_keys(self, field: Field, convert: Convert, descending: bool) -> list[Any]:
        """Each record's sort key (its least value, its greatest when ``descending``)."""


#: A compiled (sub)expression: the row numbers of the source's records that match.
Binder = Callable[[Source], set[int]]

MAX_ELEMENTS = 50
_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "GreaterThan": operator.gt, "GreaterThanOrEqualTo": operator.ge,
    "LessThan": operator.lt, "LessThanOrEqualTo": operator.le}


@dataclass(frozen=True)
class Query:
    resource: str
    #: The record members the predicate and the sort read.
    members: frozenset[str]
    #: None: every record matches.
    predicate: Binder | None
    sort: Field
    descending: bool
    #: The request's canonical form: equal queries, equal fingerprints.
    fingerprint: str


def compile_query(resource: str, expression: dict[str, Any] | None, sort_by: str | None,
                  sort_order: str | None) -> Query:
    """A Search request's ``SearchExpression``, ``SortBy`` and ``SortOrder`` for
    ``resource``; bad names and operators are refused with ValidationException."""
    state = _State(resource)
    predicate = None if expression is None else state.expression(expression)
    if state.elements > MAX_ELEMENTS:
        raise ValidationError(f"A SearchExpression may hold at most {MAX_ELEMENTS} Filters, "
                              f"NestedFilters and SubExpressions in all; this one holds "
                              f"{state.elements}.")
    if state.contains > 1:
        raise ValidationError("'CONTAINS' operator usage limit of 1 exceeded.")
    sort = fields.resolve(resource, sort_by or _default_sort(resource))
    if sort.type == OBJECT:
        raise ValidationError(f"Cannot sort {resource} results by '{sort.name}': it is not a "
                              "text, number, timestamp or boolean property.")
    fingerprint = json.dumps([resource, expression, sort.name, sort_order], sort_keys=True)
    return Query(resource, frozenset(state.members | {sort.member}), predicate, sort,
                 (sort_order or "Descending") == "Descending", fingerprint)


def _default_sort(resource: str) -> str:
    """``LastModifiedTime`` (the model's default), else ``CreationTime`` for the records
    that have no such member (model package groups, models: ``Model.CreationTime``)."""
    shape = fields.stored_shape(resource)
    under = fields.STORED_UNDER.get(resource)
    members = list(shape.members) if shape is not None else []
    for name in ("LastModifiedTime", "CreationTime"):
        if name in members:
            return name if under is None else f"{under}.{name}"
    return members[0] if members else "CreationTime"


def ordered(query: Query, source: Source, rows: set[int]) -> list[int]:
    """``rows`` in the query's order; rows without the sort property come last either way,
    ties keep the order of the rows' numbers (by name)."""
    keys = source.sort_keys(query.sort, _sort_value(query.sort.type), query.descending)
    present = [row for row in sorted(rows) if keys[row] is not None]
    missing = [row for row in sorted(rows) if keys[row] is None]
    present.sort(key=keys.__getitem__, reverse=query.descending)
    return present + missing


class _State:
    """What compiling one request has seen: members read, elements and Contains counted."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.members: set[str] = set()
        self.elements = 0
        self.contains = 0

    def expression(self, expression: dict[str, Any]) -> Binder:
        filters = list(expression.get("Filters") or [])
        nested = list(expression.get("NestedFilters") or [])
        subs = list(expression.get("SubExpressions") or [])
        if not (filters or nested or subs):
            raise ValidationError("A SearchExpression must hold at least one of Filters, "
                                  "NestedFilters or SubExpressions.")
        self.elements += len(filters) + len(nested) + len(subs)
        parts = [self.filter(f) for f in filters] + [self.nested(n) for n in nested]
        parts += [self.expression(sub) for sub in subs]
        return _join(parts, expression.get("Operator") or "And")

    def filter(self, spec: dict[str, Any]) -> Binder:
        field = fields.resolve(self.resource, spec["Name"])
        self.members.add(field.member)
        return self.test(field, spec)

    def nested(self, spec: dict[str, Any]) -> Binder:
        prefix = spec["NestedPropertyName"]
        holder = fields.resolve(self.resource, prefix)
        if holder.item is None or holder.item.type_name != "structure":
            raise ValidationError(f"NestedPropertyName '{prefix}' is not a list of objects of "
                                  f"a {self.resource}.")
        self.elements += len(spec["Filters"])
        checks: list[tuple[str, Callable[[Any], list[Any]], Test]] = []
        for item_filter in spec["Filters"]:
            name = item_filter["Name"]
            if not name.startswith(prefix + "."):
                raise ValidationError(f"The filter on '{name}' of NestedFilters "
                                      f"'{prefix}' must name a property of it "
                                      f"('{prefix}.<property>').")
            field = fields.resolve_in(self.resource, holder.item, name[len(prefix) + 1:])
            shown = Field(name, field.member, field.extract, field.type)
            checks.append((field.member, field.extract, self.item_test(shown, item_filter)))
        self.members.add(holder.member)
        reads = [(key, extract) for key, extract, _ in checks]
        tests = [test for _, _, test in checks]

        def items(value: Any) -> list[Any]:
            """Each item of the list as the values each check reads in it: tuples of
            strings and numbers, which the garbage collector does not track. (Kept as the
            decoded items, 10,000 records' channels were ~50,000 dicts and lists, and every
            full collection of the server walked them: ~45 ms.)"""
            return [tuple(tuple(_atom(got) for got in extract(item.get(key)))
                          for key, extract in reads)
                    for item in holder.extract(value) if isinstance(item, dict)]

        flat = Field(f"{prefix}[{'|'.join(f['Name'] for f in spec['Filters'])}]",
                     holder.member, items, OBJECT)

        def matches(item: tuple[tuple[Any, ...], ...]) -> bool:
            return all(test(values) for values, test in zip(item, tests, strict=True))

        def bind(source: Source) -> set[int]:
            found = source.values(flat, _present)
            return {row for row, held in enumerate(found) if any(map(matches, held))}

        return bind

    def item_test(self, field: Field, spec: dict[str, Any]) -> Test:
        """One nested filter, as a test of one list item's values."""
        how = self.operation(field, spec)
        if how.op == "Exists":
            return bool
        if how.op == "NotExists":
            return lambda values: not values
        convert, relation, target = how.convert, how.relation, how.target

        def test(values: Sequence[Any]) -> bool:
            for item in values:
                got = convert(item)
                if got is not None and relation(got, target):
                    return True
            return False

        if how.negate:
            return lambda values: not test(values)
        return test

    def test(self, field: Field, spec: dict[str, Any]) -> Binder:
        """One filter, as the set of rows it matches."""
        how = self.operation(field, spec)
        if how.op in ("Exists", "NotExists"):
            exists = how.op == "Exists"

            def present(source: Source) -> set[int]:
                single = source.single(field, _exists)
                if single is not None:
                    return {row for row, got in enumerate(single) if (got is not None) is exists}
                values = source.values(field, _exists)
                return {row for row, found in enumerate(values) if bool(found) is exists}

            return present
        convert, relation, target = how.convert, how.relation, how.target

        def matching(source: Source) -> set[int]:
            single = source.single(field, convert)
            if single is not None:
                return {row for row, got in enumerate(single)
                        if got is not None and relation(got, target)}
            values = source.values(field, convert)
            return {row for row, found in enumerate(values)
                    if any(relation(got, target) for got in found)}

        if how.negate:
            return lambda source: set(range(source.size)) - matching(source)
        return matching

    def operation(self, field: Field, spec: dict[str, Any]) -> _Operation:
        value = spec.get("Value")
        op = spec.get("Operator") or ("Equals" if value is not None else None)
        name = field.name
        if op is None:
            raise ValidationError(f"The filter on '{name}' needs an Operator or a Value.")
        if op in ("Exists", "NotExists"):
            return _Operation(op, _present, _equal, None, False)
        if value is None:
            raise ValidationError(f"The filter on '{name}' with Operator {op} needs a Value.")
        kind = field.type
        if kind == OBJECT:
            raise ValidationError(f"'{name}' is not a text, number, timestamp or boolean "
                                  "property: only Exists and NotExists apply to it.")
        if op in ("Contains", "In"):
            if op == "Contains":
                self.contains += 1
            if kind not in (TEXT, HYPERPARAMETER):
                raise ValidationError(f"Operator {op} is only supported for text properties; "
                                      f"'{name}' is a {kind} property.")
            if op == "Contains":
                return _Operation(op, _text, _contains, value, False)
            options = frozenset(part.strip() for part in value.split(","))
            return _Operation(op, _text, _member_of, options, False)
        convert, target = _operand(field, op, value)
        return _Operation(op, convert, _ORDERING.get(op, _equal), target, op == "NotEquals")


@dataclass(frozen=True)
class _Operation:
    op: str
    convert: Convert
    relation: Callable[[Any, Any], bool]
    target: Any
    #: NotEquals: the rows Equals does not match.
    negate: bool


def _join(parts: list[Binder], how: str) -> Binder:
    if len(parts) == 1:
        return parts[0]

    def both(source: Source) -> set[int]:
        found = parts[0](source)
        for part in parts[1:]:
            if not found:
                break
            found &= part(source)
        return found

    def either(source: Source) -> set[int]:
        found: set[int] = set()
        for part in parts:
            found |= part(source)
        return found

    return both if how == "And" else either


def _operand(field: Field, op: str, value: str) -> tuple[Callable[[Any], Any], Any]:
    """How a record's value is read for a comparison with ``value``, and ``value`` read."""
    kind, name = field.type, field.name
    ordering = op in _ORDERING
    if kind == HYPERPARAMETER:
        number = _number_or_none(value)
        if number is None:
            if ordering:
                raise ValidationError(f"Operator {op} on the hyperparameter '{name}' needs a "
                                      f"numeric Value, not {value!r}.")
            return _text, value
        if _is_integer(value):
            return _hyper_integer, int(number)
        return _hyper_number, number
    if kind in (TEXT, BOOLEAN) and ordering:
        raise ValidationError(f"Operator {op} is not supported for text properties; '{name}' "
                              f"is a {kind} property.")
    if kind == TEXT:
        return _text, value
    if kind == BOOLEAN:
        if value.lower() not in ("true", "false"):
            raise ValidationError(f"'{name}' is a boolean property: Value must be true or "
                                  f"false, not {value!r}.")
        return _boolean, value.lower() == "true"
    if kind == TIME:
        return _number, _timestamp(name, value)
    number = _number_or_none(value)
    if number is None:
        raise ValidationError(f"'{name}' is a numeric property: Value must be a number, not "
                              f"{value!r}.")
    return _number, number


def _equal(a: Any, b: Any) -> bool:
    return bool(a == b)


def _contains(text: str, part: str) -> bool:
    return part in text


def _member_of(text: str, options: frozenset[str]) -> bool:
    return text in options


def _present(value: Any) -> Any:
    return value


def _exists(value: Any) -> Any:
    """Only whether there is a value: kept as True, not as the value (an object's dicts would
    be tracked by the garbage collector, 10,000 records' worth)."""
    return True


def _atom(value: Any) -> Any:
    """A nested item's value as its checks read it: objects and lists are only ever tested
    for presence (a filter on an object property may only ask Exists), so True stands in."""
    return True if isinstance(value, (dict, list)) else value


def _text(value: Any) -> Any:
    return value if isinstance(value, str) else None


def _boolean(value: Any) -> Any:
    return value if isinstance(value, bool) else None


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _hyper_number(value: Any) -> Any:
    return _number_or_none(value) if isinstance(value, str) else _number(value)


def _hyper_integer(value: Any) -> Any:
    number = _hyper_number(value)
    return None if number is None else int(number)


def _number_or_none(text: str) -> float | None:
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _is_integer(text: str) -> bool:
    stripped = text.strip().lstrip("+-")
    return stripped.isdigit()


def _timestamp(name: str, value: str) -> float:
    """ISO 8601 (``YYYY-mm-ddTHH:MM:SS``, UTC unless it says otherwise) or epoch seconds."""
    number = _number_or_none(value)
    if number is not None:
        return number
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"'{name}' is a timestamp property: Value must be an ISO 8601 "
                              f"date-time (YYYY-mm-ddTHH:MM:SS), not {value!r}.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def _sort_value(kind: str) -> Convert:
    if kind in (NUMBER, TIME):
        return _number
    if kind == BOOLEAN:
        return _boolean_key
    if kind == HYPERPARAMETER:
        return _hyper_key
    return _text


def _boolean_key(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else None


def _hyper_key(value: Any) -> Any:
    """Numbers first (in order), then other values as text: one comparable key."""
    number = _hyper_number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))
