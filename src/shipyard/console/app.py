"""The console as a plain-ASGI app, mounted by the API's app under ``/console`` (same port,
same loopback default).

Each request is routed, its session checked (pages without one are sent to the login form;
fragments, data and actions are refused 401), and each POST's CSRF token checked (403
without it). Handlers read the plane, which blocks (SQLite, log files), so they run in a
small thread pool of the console's own: a page never waits behind the API's handler thread
or holds the event loop. The one handler that awaits (``try it``: InvokeEndpoint) runs on the
loop, as the runtime API does.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
import traceback
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from shipyard.api.asgi import Receive, Scope, Send
from shipyard.console import auth, endpoints, home, jobs, registry
from shipyard.console.context import PageContext
from shipyard.console.http import (
    BodyTooLarge,
    Download,
    Request,
    Response,
    redirect,
    text,
)
from shipyard.console.listing import Lister
from shipyard.console.templates import environment
from shipyard.control import ControlPlane
from shipyard.errors import ResourceNotFound, ShipyardError, ValidationError

__all__ = ["PREFIX", "Console"]

log = logging.getLogger(__name__)

PREFIX = "/console"
STATIC = Path(__file__).parent / "static"
#: Page handlers at once: reads are short, and two let a long one (a deep log page) not
#: hold up the rest.
THREADS = 2

#: Paths that answer data (JSON), not pages: refused without a session, never redirected.
_DATA = ("/log", "/metrics")

Handler = Callable[[PageContext], Response]
AsyncHandler = Callable[[PageContext], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler | None = None
    #: A handler that awaits (runs on the loop) instead of one that blocks.
    awaiting: AsyncHandler | None = None


def _route(method: str, path: str, handler: Handler | None = None, *,
           awaiting: AsyncHandler | None = None) -> Route:
    regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)
    return Route(method, re.compile(f"^{regex}$"), handler, awaiting)


ROUTES: tuple[Route, ...] = (
    _route("GET", "/", home.page),
    _route("GET", "/jobs", jobs.listing),
    _route("GET", "/jobs/{kind}/{name}", jobs.page),
    _route("GET", "/jobs/{kind}/{name}/log", jobs.log),
    _route("GET", "/jobs/{kind}/{name}/metrics", jobs.metrics),
    _route("POST", "/jobs/{kind}/{name}/stop", jobs.stop),
    _route("GET", "/jobs/{kind}/{name}/files", jobs.files),
    _route("GET", "/jobs/{kind}/{name}/download", jobs.download),
    _route("GET", "/endpoints", endpoints.listing),
    _route("GET", "/endpoints/{name}", endpoints.page),
    _route("GET", "/endpoints/{name}/metrics", endpoints.metrics),
    _route("POST", "/endpoints/{name}/invoke", awaiting=endpoints.invoke),
    _route("GET", "/models/{name}", endpoints.model),
    _route("GET", "/registry", registry.groups),
    _route("GET", "/registry/{group}", registry.group),
    _route("POST", "/registry/{group}/{version}/approval", registry.approval),
)


class Console:
    """The console's ASGI app over ``plane``, for the holders of ``secrets``."""

    def __init__(self, plane: ControlPlane, secrets: Mapping[str, str], *,
                 prefix: str = PREFIX) -> None:
        self.plane = plane
        self.prefix = prefix
        self.gate = auth.Gate(secrets, plane.settings.data_dir / "console-links")
        self.lister = Lister(plane)
        self.env = environment()
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def handles(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request.from_scope(scope, self.prefix)
        try:
            response = await self._answer(request, receive)
        except BodyTooLarge as exc:
            response = text(str(exc), 413)
        except Exception:
            log.error("console request %s %s failed:\n%s", request.method, request.path,
                      traceback.format_exc())
            response = text("Internal error (the server's log has the details)", 500)
        if isinstance(response, Download):
            await response.send(send, receive)
        else:
            await response.send(send)

    async def _answer(self, request: Request, receive: Receive) -> Response:
        path, method = request.path, request.method
        if path.startswith("/static/") and method in ("GET", "HEAD"):
            return _static(path[len("/static/"):])
        if path in ("/login", "/login/link", "/logout"):
            if method == "POST":
                await request.read_form(receive)
            return self._login(request)
        session = self.gate.session(request.cookies.get(auth.COOKIE))
        if session is None:
            if method == "GET" and not request.wants_fragment and not path.endswith(_DATA):
                return redirect(request.url("/login") + "?next=" + _next(request))
            return text("Log in first: no console session", 401)
        for route in ROUTES:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method != method:
                return text(f"{method} is not allowed here", 405)
            if method == "POST":
                await request.read_form(receive)
                token = request.form.get(auth.CSRF_FIELD) or request.headers.get(
                    auth.CSRF_HEADER)
                if not self.gate.csrf_ok(session, token) or not _same_origin(request):
                    return text("Refused: this action is missing its CSRF token "
                                "(reload the page and try again)", 403)
            request.params = found.groupdict()  # the ASGI path is decoded already
            page = PageContext(self.plane, self.lister, self.env, request, session)
            return await self._run(route, page)
        return self._not_found(request, session, f"No console page at {path}")

    async def _run(self, route: Route, page: PageContext) -> Response:
        try:
            if route.awaiting is not None:
                return await route.awaiting(page)
            assert route.handler is not None
            if self._pool is None:
                self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="shipyard-console")
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, route.handler, page)
        except (ResourceNotFound, ValidationError) as exc:
            status = 404 if isinstance(exc, ResourceNotFound) or "not found" in str(
                exc).lower() else 400
            return page.render("error.html", status, message=str(exc), status_code=status)
        except ShipyardError as exc:
            return page.render("error.html", exc.http_status, message=str(exc),
                               status_code=exc.http_status)

    def _not_found(self, request: Request, session: auth.Session, message: str) -> Response:
        page = PageContext(self.plane, self.lister, self.env, request, session)
        return page.render("error.html", 404, message=message, status_code=404)

    def _login(self, request: Request) -> Response:
        page = PageContext(self.plane, self.lister, self.env, request, None)
        target = _safe_next(request.query.get("next") or request.form.get("next", ""),
                            self.prefix)
        if request.path == "/logout":
            if request.method != "POST":
                return text("Log out with a POST", 405)
            session = self.gate.session(request.cookies.get(auth.COOKIE))
            if session is None or not self.gate.csrf_ok(session, request.form.get("csrf")):
                return text("Refused: missing CSRF token", 403)
            return _with_cookie(redirect(request.url("/login")), "", self.prefix, 0)
        if request.path == "/login/link":
            cookie = self.gate.redeem(request.query.get("token", ""))
            if cookie is None:
                return page.render("login.html", 403, next=target, error=(
                    "This login link is used up, expired or not this server's: run "
                    "`shipyard server status` for a fresh one, or log in with your keys."))
            # A page that moves on by itself rather than a redirect: a link opened from
            # another site starts a cross-site navigation, and a SameSite=Strict cookie set
            # on its way would not be sent along a redirect (it is on the page's own move).
            landing = page.render("landing.html", target=target)
            return _with_cookie(landing, cookie, self.prefix, auth.SESSION_SECONDS)
        if request.method == "POST":
            cookie = self.gate.login(request.form.get("access_key", "").strip(),
                                     request.form.get("secret", "").strip())
            if cookie is None:
                return page.render("login.html", 403, next=target,
                                   error="Wrong access key or secret.")
            return _with_cookie(redirect(target), cookie, self.prefix, auth.SESSION_SECONDS)
        return page.render("login.html", next=target, error="")


def _with_cookie(response: Response, value: str, path: str, max_age: int) -> Response:
    response.headers.append(("set-cookie", f"{auth.COOKIE}={value}; Path={path}; "
                                           f"Max-Age={max_age}; HttpOnly; SameSite=Strict"))
    return response


def _next(request: Request) -> str:
    from urllib.parse import quote
    query = "&".join(f"{k}={v}" for k, v in request.query.items())
    return quote(request.url(request.path) + (f"?{query}" if query else ""), safe="")


def _safe_next(target: str, prefix: str) -> str:
    """Only a path of the console itself (never another site: an open redirect)."""
    if target.startswith(prefix) and not target.startswith("//") and "\\" not in target:
        return target
    return prefix + "/"


def _same_origin(request: Request) -> bool:
    """An action's Origin, when the browser names one, must be the console's own (``null``,
    what a browser sends when it withholds the origin, is left to the CSRF token)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def _static(name: str) -> Response:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)?", name) or ".." in name:
        return text("Not found", 404)
    path = STATIC / name
    if not path.is_file():
        return text("Not found", 404)
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind.endswith("javascript"):
        kind += "; charset=utf-8"
    response = Response(path.read_bytes(), 200, kind)
    return response
