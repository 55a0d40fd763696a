"""Request bodies read as AWS reads them, then checked against botocore's service models.

The API parses every awsJson body here (:func:`parse_json_body`); the checking against
botocore's model (:func:`validate`, :func:`operation_model`) is the control plane's
(``control.shapes``), re-exported for the operations the API checks itself: those whose
control-plane method does not (``control.CHECKED_AT_DOOR``). Sources and message
formats: docs/api-validation.md.

* a malformed body -> ``SerializationException`` with no message; a top-level array ->
  ``Start of list found where not expected``;
* null members are the same as absent ones.
"""

from __future__ import annotations

import json
from typing import Any

from shipyard.control.shapes import (
    compile_java_pattern,
    operation_model,
    skipped_patterns,
    validate,
)
from shipyard.errors import SerializationError

__all__ = [
    "compile_java_pattern",
    "operation_model",
    "parse_json_body",
    "skipped_patterns",
    "validate",
]


def parse_json_body(body: bytes) -> dict[str, Any]:
    """The request object of an awsJson1.0/1.1 body; an empty body is ``{}``.

    Not JSON, not UTF-8, ``NaN``/``Infinity`` or too deep -> ``SerializationException`` with no
    message (what AWS sends); a top-level array -> ``Start of list found where not expected``.
    Members whose value is ``null`` are dropped: AWS treats them as absent.
    """
    if not body.strip():
        return {}
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant,
                           object_hook=_drop_nulls)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeError are ValueErrors
        raise SerializationError("") from exc
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        raise SerializationError("Start of list found where not expected")
    raise SerializationError("")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _drop_nulls(obj: dict[str, Any]) -> dict[str, Any]:
    if None not in obj.values():
        return obj
    return {key: value for key, value in obj.items() if value is not None}
