"""Opaque ``NextToken`` values for ListMetrics and GetMetricData.

A token holds where the next page starts and a fingerprint of the request it continues: the
same call with other filters, times or queries refuses it (``InvalidNextToken`` for
GetMetricData, ``InvalidParameterValue`` for ListMetrics, the codes each operation's model
lists) instead of skipping or repeating data. The last page carries no token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from shipyard.errors import ValidationError

__all__ = ["decode", "encode"]


def _fingerprint(scope: Any) -> str:
    canonical = json.dumps(scope, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode(position: list[int], scope: Any) -> str:
    raw = json.dumps({"p": position, "f": _fingerprint(scope)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: object, scope: Any, error: type[ValidationError], size: int) -> list[int]:
    """The ``size`` numbers ``encode`` put in ``token``, if it was made for ``scope``."""
    try:
        text = str(token)
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        position = data["p"]
        same = data["f"] == _fingerprint(scope)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise error("The NextToken is invalid or was made for another request.") from exc
    if (not same or not isinstance(position, list) or len(position) != size
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                       for n in position)):
        raise error("The NextToken is invalid or was made for another request.")
    return position
