"""What the API's and the console's ASGI code share: the ASGI types, and reading a request
body under a size limit (both refuse a body over their limit while it arrives, never after
holding it whole)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Message", "Receive", "Scope", "Send", "read_body"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def read_body(receive: Receive, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The request's body; ``too_large()`` is raised as soon as more than ``limit`` bytes
    came. A client that disconnects ends the body where it was."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
