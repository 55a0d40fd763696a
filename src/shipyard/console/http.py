"""The console's requests and responses over plain ASGI: what a page handler reads (path
parameters, query, form, cookies) and what it returns (HTML, a redirect, JSON, a file).

Security headers leave on every response: a Content-Security-Policy that allows scripts from
the console's own origin only (no inline script: the pages' data travels in
``<script type="application/json">`` blocks), no framing, no referrer sent to other sites (a
login link's token must not leak), and no caching of pages that hold a CSRF token.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, quote

from shipyard.api.asgi import Receive, Scope, Send, read_body

#: A form's body (a "try it" payload included) may be this big: InvokeEndpoint's own limit.
MAX_FORM_BYTES = 6 * 1024 * 1024

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
     b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
     b"form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)


class BodyTooLarge(Exception):
    """A form over :data:`MAX_FORM_BYTES`."""


@dataclass
class Request:
    method: str
    #: The path below the console's prefix, always starting with ``/``.
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    #: Where the console is mounted (``/console``): links are built from it.
    prefix: str
    params: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_scope(cls, scope: Scope, prefix: str) -> Request:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        path = scope["path"][len(prefix):] or "/"
        return cls(scope["method"], path, _first_values(scope.get("query_string", b"")),
                   headers, prefix)

    @property
    def cookies(self) -> dict[str, str]:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except CookieError:
            return {}
        return {key: morsel.value for key, morsel in jar.items()}

    @property
    def wants_fragment(self) -> bool:
        """A request from htmx or the page's poller: answer the part, not the page."""
        return "hx-request" in self.headers or self.query.get("fragment") == "1"

    def url(self, path: str) -> str:
        return self.prefix + path

    async def read_form(self, receive: Receive) -> None:
        """Read an ``application/x-www-form-urlencoded`` body into :attr:`form`."""
        body = await read_body(receive, MAX_FORM_BYTES,
                               lambda: BodyTooLarge(f"a form over {MAX_FORM_BYTES} bytes"))
        if self.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):
            self.form = _first_values(body)


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        headers = [(b"content-type", self.content_type.encode()),
                   (b"content-length", str(len(self.body)).encode()),
                   (b"cache-control", b"no-store"), *SECURITY_HEADERS]
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


@dataclass
class Download(Response):
    """A file sent as an attachment, its chunks read from a blocking source (a file, an S3
    object's body) on a worker thread, one at a time: never whole in memory, never on the
    event loop, and no faster than the client takes them (the server holds a send while its
    write buffer is full). Reading stops once the client goes away; ``close`` runs once it
    is sent or abandoned."""

    chunks: Iterator[bytes] = field(default_factory=lambda: iter(()))
    close: Callable[[], None] = lambda: None
    length: int | None = None

    @classmethod
    def attachment(cls, filename: str, chunks: Iterator[bytes], close: Callable[[], None],
                   length: int | None) -> Download:
        return cls(b"", 200, "application/octet-stream",
                   [("content-disposition", content_disposition(filename))],
                   chunks, close, length)

    async def send(self, send: Send, receive: Receive | None = None) -> None:
        headers = [(b"content-type", self.content_type.encode()),
                   (b"cache-control", b"no-store"), *SECURITY_HEADERS]
        if self.length is not None:
            headers.append((b"content-length", str(self.length).encode()))
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers]
        # A server drops what is sent after the client left, without a word: ask it.
        gone = asyncio.ensure_future(_disconnected(receive)) if receive else None
        try:
            await send({"type": "http.response.start", "status": self.status,
                        "headers": headers})
            while gone is None or not gone.done():
                chunk = await asyncio.to_thread(next, self.chunks, b"")
                if not chunk:
                    await send({"type": "http.response.body", "body": b""})
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            if gone is not None:
                gone.cancel()
            await asyncio.to_thread(self.close)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def content_disposition(filename: str) -> str:
    """``attachment`` with a plain ASCII name and, for any other, RFC 6266's UTF-8 one."""
    plain = re.sub(r'[^A-Za-z0-9._ -]', "_", filename) or "download"
    value = f'attachment; filename="{plain}"'
    if plain != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


def html(text: str, status: int = 200) -> Response:
    return Response(text.encode(), status)


def text(message: str, status: int) -> Response:
    return Response(message.encode(), status, "text/plain; charset=utf-8")


def json_response(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value, separators=(",", ":")).encode(), status,
                    "application/json")


def redirect(location: str, status: int = 303) -> Response:
    return Response(b"", status, headers=[("location", location)])


def quoted(value: str) -> str:
    """A path segment (a resource name may hold characters a URL reserves)."""
    return quote(value, safe="")


def _first_values(raw: bytes) -> dict[str, str]:
    parsed = parse_qs(raw.decode("latin-1"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


__all__ = ["BodyTooLarge", "Download", "Request", "Response", "content_disposition", "html",
           "json_response", "quoted", "redirect", "text"]
