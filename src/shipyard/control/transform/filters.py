"""Batch transform's ``DataProcessing``: the JSONPath subset, CSV/JSON records and JoinSource.

Implements AWS's "Associate Prediction Results with Input Records" (platform-api.md 3.7):

- ``InputFilter`` selects what the model sees of each input record, ``JoinSource: Input`` joins
  the *original* (unfiltered) input record with the model's output for it, and
  ``OutputFilter`` selects what of the joined record (or of the output alone) is written.
- A CSV row is taken as a JSON array of its fields (strings), so only index-based paths apply
  to CSV (``$[0]``, ``$[1:]``, ``$[0,-1]``); a JSON or JSON Lines record is a JSON value.
- Joining: CSV appends the output's columns to the input row; JSON adds ``SageMakerOutput`` to
  an input object, or wraps anything else as ``{"SageMakerInput": ..., "SageMakerOutput": ...}``.

The JSONPath subset is AWS's table of supported operators: ``$``, ``.name``, ``*``,
``['a','b']``, ``[1]``, ``[1,3,-1]``, ``[start:end]``, and one range among indexes
(``$[0,5:]``). Two ranges in one bracket are refused with AWS's own message. Slices follow
Jayway JsonPath (which AWS points to) and Python: ``[1:4]`` is indexes 1, 2 and 3, the end
excluded. (AWS's prose says "inclusive" beside an operator table that says "slice()"; the
JSONPath library it links and every slice operator exclude the end.)

Evaluation follows Jayway's rules: while the path so far selects one value (it is
*definite*), a missing key or an out-of-range index is an error, as AWS documents ("If you
specify indexes that aren't within the dimension size ... you get an error"); once a wildcard,
a slice or several indexes made it a list, misses are skipped. ``['a','b']`` at the end of a
path builds an object of the keys present. A definite path gives its value, an indefinite one
a list.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from shipyard.errors import DataSourceError, ValidationError

CSV = "csv"
JSON = "json"
#: Content types DataProcessing understands (parameters such as ``; charset=`` are ignored).
FORMATS_BY_CONTENT_TYPE = {
    "text/csv": CSV,
    "application/json": JSON,
    "application/jsonlines": JSON,
    "application/x-jsonlines": JSON,
    "application/jsonl": JSON,
}
JOIN_OUTPUT_KEY = "SageMakerOutput"
JOIN_INPUT_KEY = "SageMakerInput"
#: DataProcessing.InputFilter / OutputFilter length limit (SageMaker's model).
MAX_PATH_LENGTH = 63
ROOT = "$"

_INDEX = re.compile(r"-?\d+")
_SLICE = re.compile(r"(-?\d+)?\s*:\s*(-?\d+)?")
_NAME_STOP = ".[]'\" \t"


def format_of(content_type: str | None) -> str | None:
    """``csv``/``json`` for a content type DataProcessing can read, else None."""
    if not content_type:
        return None
    return FORMATS_BY_CONTENT_TYPE.get(content_type.split(";", 1)[0].strip().lower())


# -- the JSONPath subset -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Names:
    """``.name`` (one) or ``['a','b']`` (several)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class _Wildcard:
    """``.*`` or ``[*]``: every value of an object, every element of an array."""


@dataclass(frozen=True)
class _Indexes:
    """``[1]``, ``[1,-1]``, ``[2:5]``, ``[0,5:]``: ints and at most one ``slice``."""

    items: tuple[int | slice, ...]

    @property
    def single(self) -> bool:
        return len(self.items) == 1 and isinstance(self.items[0], int)


_Segment = _Names | _Wildcard | _Indexes


class _Miss(Exception):
    """A definite path found nothing: the caller names the record and the filter."""


@dataclass(frozen=True)
class JsonPath:
    """A parsed InputFilter/OutputFilter; ``JsonPath.parse("$")`` is the identity."""

    text: str
    segments: tuple[_Segment, ...]

    @classmethod
    def parse(cls, text: str, member: str = "JsonPath") -> JsonPath:
        """Parse ``text``; an empty string means ``$`` (the model's minimum length is 0)."""
        if not isinstance(text, str):
            raise ValidationError(f"{member} must be a string")
        source = text.strip()
        if source in ("", ROOT):
            return cls(ROOT, ())
        if len(text) > MAX_PATH_LENGTH:
            raise ValidationError(
                f"1 validation error detected: Value '{text}' at '{member}' failed to satisfy"
                f" constraint: Member must have length less than or equal to {MAX_PATH_LENGTH}")
        if not source.startswith(ROOT):
            raise _invalid(source, "a path must start with $")
        return cls(source, tuple(_Parser(source).segments()))

    @property
    def identity(self) -> bool:
        return not self.segments

    @property
    def index_only(self) -> bool:
        """Whether the path applies to a CSV row (an array): no selection by name."""
        return not any(isinstance(seg, _Names) for seg in self.segments)

    def evaluate(self, value: Any) -> Any:
        """Apply the path; raises ``DataSourceError`` when a definite step finds nothing."""
        nodes = [value]
        definite = True
        last = len(self.segments) - 1
        for position, segment in enumerate(self.segments):
            leaf = position == last
            found: list[Any] = []
            for node in nodes:
                try:
                    found.extend(_select(segment, node, leaf))
                except _Miss as exc:
                    if definite:
                        raise DataSourceError(f"{self.text}: {exc}") from None
            nodes = found
            definite = definite and _definite(segment, leaf)
        return nodes[0] if definite else nodes

    def __str__(self) -> str:
        return self.text


def _invalid(text: str, reason: str) -> ValidationError:
    return ValidationError(f"Invalid JsonPath: {text}: {reason}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 1  # after "$"

    def segments(self) -> Iterator[_Segment]:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "[":
                yield self._bracket()
            elif char == ".":
                self.pos += 1
                following = text[self.pos:self.pos + 1]
                if following == ".":
                    raise _invalid(text, "recursive descent (..) is not supported")
                if following == "[":
                    # AWS documents $.field1.['child1','child2'] beside $.field1['child1',...]
                    yield self._bracket()
                elif following == "*":
                    self.pos += 1
                    yield _Wildcard()
                else:
                    yield _Names((self._name(),))
            else:
                raise _invalid(text, f"unexpected {char!r} at position {self.pos}")

    def _name(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _NAME_STOP:
            self.pos += 1
        if self.pos == start:
            raise _invalid(self.text, f"a name is expected at position {start}")
        return self.text[start:self.pos]

    def _bracket(self) -> _Segment:
        """``[...]`` at ``self.pos``: wildcard, quoted names, or indexes with one range."""
        text = self.text
        opened = self.pos
        self.pos += 1
        items: list[str | int | slice] = []
        wildcard = False
        while True:
            self._skip_spaces()
            if self.pos >= len(text):
                raise _invalid(text, f"'[' at position {opened} is never closed")
            char = text[self.pos]
            if char in "'\"":
                items.append(self._quoted(char))
            elif char == "*":
                self.pos += 1
                wildcard = True
            elif char in "?(":
                raise _invalid(text, "filter and script expressions are not supported")
            else:
                items.append(self._number_or_range())
            self._skip_spaces()
            if self.pos >= len(text):
                raise _invalid(text, f"'[' at position {opened} is never closed")
            if text[self.pos] == "]":
                self.pos += 1
                break
            if text[self.pos] != ",":
                raise _invalid(text, f"',' or ']' expected at position {self.pos}")
            self.pos += 1
        body = text[opened:self.pos]
        if wildcard:
            if items:
                raise _invalid(text, f"{body}: '*' cannot be combined with other selectors")
            return _Wildcard()
        names = [item for item in items if isinstance(item, str)]
        if names:
            if len(names) != len(items):
                raise _invalid(text, f"{body} mixes names and indexes")
            return _Names(tuple(names))
        if sum(isinstance(item, slice) for item in items) > 1:
            raise _invalid(text, f"only single range filters of format (eg: [1:5]) are"
                                 f" supported. Format {body} is not supported")
        return _Indexes(tuple(item for item in items if not isinstance(item, str)))

    def _quoted(self, quote: str) -> str:
        text = self.text
        self.pos += 1
        chars = []
        while self.pos < len(text) and text[self.pos] != quote:
            if text[self.pos] == "\\" and self.pos + 1 < len(text):
                self.pos += 1
            chars.append(text[self.pos])
            self.pos += 1
        if self.pos >= len(text):
            raise _invalid(text, "unterminated quoted name")
        self.pos += 1
        return "".join(chars)

    def _number_or_range(self) -> int | slice:
        text = self.text
        end = self.pos
        while end < len(text) and text[end] not in ",]":
            end += 1
        token = text[self.pos:end].strip()
        self.pos = end
        if _INDEX.fullmatch(token):
            return int(token)
        match = _SLICE.fullmatch(token)
        if match:
            start, stop = match.groups()
            return slice(None if start is None else int(start),
                         None if stop is None else int(stop))
        if token.count(":") > 1:
            raise _invalid(text, f"[{token}]: slice steps are not supported")
        raise _invalid(text, f"[{token}] is not an index, a range or a quoted name")

    def _skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1


def _definite(segment: _Segment, leaf: bool) -> bool:
    if isinstance(segment, _Names):
        # ['a','b'] at the end builds one object; inside a path it fans out (Jayway).
        return len(segment.names) == 1 or leaf
    if isinstance(segment, _Indexes):
        return segment.single
    return False


def _describe(node: Any) -> str:
    if isinstance(node, dict):
        return "an object"
    if isinstance(node, list):
        return f"an array of {len(node)}"
    return f"a {type(node).__name__} value" if node is not None else "null"


def _select(segment: _Segment, node: Any, leaf: bool) -> list[Any]:
    """What ``segment`` selects in ``node``; ``_Miss`` when a named key or index is absent."""
    if isinstance(segment, _Names):
        if not isinstance(node, dict):
            raise _Miss(f"{', '.join(map(repr, segment.names))} selected in {_describe(node)}")
        if len(segment.names) == 1:
            name = segment.names[0]
            if name not in node:
                raise _Miss(f"no key {name!r}")
            return [node[name]]
        present = [name for name in segment.names if name in node]
        if leaf:
            return [{name: node[name] for name in present}]
        return [node[name] for name in present]
    if isinstance(segment, _Wildcard):
        if isinstance(node, dict):
            return list(node.values())
        if isinstance(node, list):
            return list(node)
        raise _Miss(f"'*' applied to {_describe(node)}")
    if not isinstance(node, list):
        raise _Miss(f"an index applied to {_describe(node)}")
    picked: list[Any] = []
    for item in segment.items:
        if isinstance(item, slice):
            picked.extend(node[item])
            continue
        index = item + len(node) if item < 0 else item
        if not 0 <= index < len(node):
            raise _Miss(f"index {item} is outside {_describe(node)}")
        picked.append(node[index])
    return picked


# -- CSV and JSON records ----------------------------------------------------------------------


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataSourceError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _lines(text: str) -> list[str]:
    lines = text.split("\n")
    stripped = (line[:-1] if line.endswith("\r") else line for line in lines)
    return [line for line in stripped if line]


def parse_units(data: bytes, fmt: str) -> list[Any]:
    """The CSV rows (lists of strings) or JSON values in one record or response.

    JSON: the whole text as one document when it parses (``application/json``, pretty-printed
    or not), else one document per non-empty line (JSON Lines). CSV: one row per non-empty line;
    RFC 4180 quoting, but no newline inside a quoted field (AWS: "you cannot use embedded
    newline characters").
    """
    text = _text(data).lstrip("\ufeff")
    if fmt == JSON:
        if not text.strip():
            return []
        try:
            return [json.loads(text)]
        except ValueError:
            pass
        units = []
        for number, line in enumerate(_lines(text), 1):
            try:
                units.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataSourceError(
                    f"line {number} is not JSON ({exc.msg} at column {exc.colno})") from None
        return units
    try:
        return list(csv.reader(_lines(text), strict=True))
    except csv.Error as exc:
        raise DataSourceError(f"not CSV: {exc}") from None


def _field(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def dump_unit(value: Any, fmt: str) -> bytes:
    """One CSV row (a list is its fields, anything else one field) or one compact JSON value."""
    if fmt == JSON:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    buffer = io.StringIO()
    fields = value if isinstance(value, list) else [value]
    csv.writer(buffer, lineterminator="").writerow([_field(item) for item in fields])
    return buffer.getvalue().encode()


def join_unit(input_unit: Any, output_unit: Any, fmt: str) -> Any:
    """``JoinSource: Input`` for one record: the original input with the model's output."""
    if fmt == CSV:
        head = input_unit if isinstance(input_unit, list) else [input_unit]
        tail = output_unit if isinstance(output_unit, list) else [output_unit]
        return [*head, *tail]
    if isinstance(input_unit, dict):
        # AWS: an input key named SageMakerOutput is overwritten.
        return {**input_unit, JOIN_OUTPUT_KEY: output_unit}
    return {JOIN_INPUT_KEY: input_unit, JOIN_OUTPUT_KEY: output_unit}


def response_units(response: bytes, fmt: str, expected: int) -> list[Any]:
    """Split one answer into ``expected`` per-record outputs, for JoinSource.

    One output line per record (CSV rows, JSON Lines); for JSON, also one document when one
    record was sent, or one JSON array with an element per record. Anything else is an error
    naming both counts: the outputs cannot be matched to their inputs.
    """
    if fmt == JSON:
        text = _text(response).lstrip("\ufeff")
        try:
            whole = json.loads(text)
            parsed = True
        except ValueError:
            whole, parsed = None, False
        if parsed:
            if expected == 1:
                return [whole]
            if isinstance(whole, list) and len(whole) == expected:
                return whole
            raise DataSourceError(
                f"the model answered one JSON document ({_describe(whole)}) for {expected}"
                " records; joining needs one JSON line per record or an array of"
                f" {expected} elements")
        units = parse_units(response, JSON)
    else:
        units = parse_units(response, CSV)
    if len(units) != expected:
        raise DataSourceError(
            f"the model answered {len(units)} line{'' if len(units) == 1 else 's'} for"
            f" {expected} record{'' if expected == 1 else 's'}; joining outputs to inputs needs"
            " one output line per record (or use BatchStrategy SingleRecord)")
    return units


def filter_units(path: JsonPath, units: Sequence[Any], fmt: str) -> bytes:
    """Apply ``path`` to each unit and write them back one per line."""
    return b"\n".join(dump_unit(path.evaluate(unit), fmt) for unit in units)
