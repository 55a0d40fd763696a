"""Opaque ``NextToken`` values for List* operations.

A token carries the offset of the next page and a fingerprint of the filters it was made
for, so a token replayed with other filters is refused instead of silently skipping rows.
AWS omits ``NextToken`` on the last page, and so do we (the SDK loops while it is present).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from shipyard.errors import ValidationError

MAX_TOKEN_LENGTH = 8192


def _fingerprint(filters: dict[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, default=str).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def encode(offset: int, filters: dict[str, Any]) -> str:
    raw = json.dumps({"o": offset, "f": _fingerprint(filters)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode(token: str | None, filters: dict[str, Any]) -> int:
    """The offset a token points at; 0 without a token."""
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset = int(data["o"])
        same = data["f"] == _fingerprint(filters)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError("Invalid pagination token") from exc
    if offset < 0 or not same:
        raise ValidationError("Invalid pagination token")
    return offset
