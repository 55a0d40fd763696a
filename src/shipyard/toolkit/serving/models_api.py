"""The HTTP routes of multi-model mode: SageMaker's ``/models`` API on the serving port.

Routes (SageMaker "multi-model endpoint container contract" and MMS, reference 4.7-4.8):

====================================== ====================================================
``POST /models``                       load ``{"model_name", "url"}`` (or the same as query
                                       parameters): 200 ``{"status": "Workers scaled"}``;
                                       409 loaded already; 404 no such ``url``; 400 a bad
                                       body or a ``url`` that is not a directory; 507 it
                                       cannot fit the memory budget; 500 ``model_fn`` failed
``GET /models[?limit&next_page_token]`` ``{"models": [{"modelName", "modelUrl"}],
                                       "nextPageToken"?}``, names sorted, 100 a page at most
``GET /models/<name>``                 ``{"modelName", "modelUrl", "memoryBytes",
                                       "loadedAt"}``; 404 not loaded
``DELETE /models/<name>``              200 ``{"status": "Model \\"<name>\\" unregistered"}``
                                       once every worker has let it go; 404 not loaded
``POST /models/<name>/invoke``         the model's handler, as ``/invocations``; 404 not loaded
``POST /invocations``                  the model named by ``X-Amzn-SageMaker-Target-Model``,
                                       loaded on demand from ``<models root>/<name>/model``
``GET /ping``                          200 once the workers run (no model needed)
``GET /execution-parameters``          as in single-model mode
====================================== ====================================================

Errors are MMS's JSON: ``{"code": 404, "type": "ModelNotFoundException", "message": "Model not
found: x"}``. A route that has to load or wait answers from a task, so the worker keeps serving
other connections (``/ping`` included) meanwhile.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from shipyard.toolkit.serving.handler import TARGET_MODEL
from shipyard.toolkit.serving.multimodel import ModelHost
from shipyard.toolkit.serving.protocol import HttpProtocol, Worker
from shipyard.toolkit.serving.registry import InvalidModelRequest, ModelApiError, ModelNotFound

#: ``GET /models`` page size, default and most (MMS caps ``limit`` at 100)
PAGE_LIMIT = 100
_INVOKE_SUFFIX = "/invoke"

#: what a deferred route hands back: send the answer, given the final keep-alive decision
Responder = Callable[[bool], None]


class MethodNotAllowed(ModelApiError):
    """A ``/models`` route with the wrong method (405)."""

    status_code = 405
    wire_type = "MethodNotAllowedException"


def _load_request(body: bytes, query: str) -> tuple[str, str]:
    """``(model_name, url)`` from a JSON body, else from query parameters (MMS takes both)."""
    fields: dict[str, Any]
    if body.strip():
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise InvalidModelRequest(f"Invalid JSON body: {exc}") from exc
        if not isinstance(parsed, dict):
            raise InvalidModelRequest('The body must be a JSON object: {"model_name": ..., '
                                      '"url": ...}')
        fields = parsed
    else:
        fields = dict(parse_qsl(query))
    url, name = fields.get("url"), fields.get("model_name")
    if not isinstance(url, str) or not url:
        raise InvalidModelRequest("Parameter url is required.")
    if not isinstance(name, str) or not name:
        raise InvalidModelRequest("Parameter model_name is required.")
    if not name.isprintable() or not url.isprintable():
        raise InvalidModelRequest("Parameters model_name and url must be printable text.")
    return name, url.removeprefix("file://")


def _page(query: str) -> tuple[int, int]:
    params = dict(parse_qsl(query))
    try:
        limit = int(params.get("limit") or PAGE_LIMIT)
        start = int(params.get("next_page_token") or 0)
    except ValueError as exc:
        raise InvalidModelRequest("limit and next_page_token must be integers") from exc
    if limit <= 0 or limit > PAGE_LIMIT:
        limit = PAGE_LIMIT
    return max(0, start), limit


class ModelsProtocol(HttpProtocol):
    """:class:`.protocol.HttpProtocol` with multi-model routing; see the module docstring.

    Single-model mode never builds this class, so its request path is unchanged.
    """

    def __init__(self, worker: Worker, host: ModelHost) -> None:
        super().__init__(worker)
        self.host = host
        self._task: asyncio.Task[None] | None = None  # the deferred route now running

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes,
                  keep_alive: bool) -> None:
        path, _, query = target.partition("?")
        if path == "/invocations":
            if method != "POST":
                self._fail(405, "use POST /invocations")
                return
            name = headers.get(TARGET_MODEL, "")
            if not name:
                self._error(InvalidModelRequest(
                    "multi-model mode: name the model in the X-Amzn-SageMaker-Target-Model "
                    "header, or use POST /models/<name>/invoke"), keep_alive)
                return
            self._invoke_model(name, headers, body, keep_alive, on_demand=True)
        elif path == "/ping":
            ok = self.worker.healthy() and not self.worker.draining
            self._send(200 if ok else 503, b"" if ok else b'{"status": "Unhealthy"}',
                       "application/json", keep_alive)
        elif path == "/execution-parameters":
            self._send(200, self.worker.exec_params, "application/json", keep_alive)
        elif path == "/models" or path.startswith("/models/"):
            try:
                self._models(method, path, query, headers, body, keep_alive)
            except ModelApiError as exc:
                self._error(exc, keep_alive)
        else:
            self._send(404, b"{}", "application/json", keep_alive)

    def _models(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes,
                keep_alive: bool) -> None:
        if path == "/models":
            if method == "GET":
                self._json(200, self._list(query), keep_alive)
            elif method == "POST":
                self._defer(self._load(body, query), keep_alive)
            else:
                raise MethodNotAllowed("use GET or POST /models")
            return
        raw = path[len("/models/"):]
        if raw.endswith(_INVOKE_SUFFIX):
            if method != "POST":
                raise MethodNotAllowed("use POST /models/<name>/invoke")
            self._invoke_model(unquote(raw[: -len(_INVOKE_SUFFIX)]), headers, body, keep_alive,
                               on_demand=False)
            return
        name = unquote(raw)
        if method == "GET":
            self.host.sync()
            entry = self.host.entries.get(name)
            if entry is None:
                raise ModelNotFound.named(name)
            self._json(200, entry.describe(), keep_alive)
        elif method == "DELETE":
            self._defer(self._unload(name), keep_alive)
        else:
            raise MethodNotAllowed("use GET or DELETE /models/<name>")

    # -- routes --------------------------------------------------------------------------------

    def _list(self, query: str) -> dict[str, object]:
        start, limit = _page(query)
        self.host.sync()
        entries = self.host.entries
        names = sorted(entries)
        answer: dict[str, object] = {"models": [
            {"modelName": name, "modelUrl": entries[name].url}
            for name in names[start:start + limit]
        ]}
        if start + limit < len(names):
            answer["nextPageToken"] = str(start + limit)
        return answer

    async def _load(self, body: bytes, query: str) -> Responder:
        name, url = _load_request(body, query)
        model_dir = Path(url)
        if not model_dir.is_absolute():
            model_dir = self.host.settings.models_root / model_dir
        if not model_dir.exists():
            raise ModelNotFound(f"Model directory not found: {url}")
        if not model_dir.is_dir():
            raise InvalidModelRequest(f"Parameter url is not a directory: {url}")
        await self.host.load(name, model_dir)
        return lambda keep: self._json(200, {"status": "Workers scaled"}, keep)

    async def _unload(self, name: str) -> Responder:
        await self.host.unload(name)
        return lambda keep: self._json(200, {"status": f'Model "{name}" unregistered'}, keep)

    def _invoke_model(self, name: str, headers: dict[str, str], body: bytes, keep_alive: bool,
                      on_demand: bool) -> None:
        handler = self.host.ready(name)
        if handler is not None:  # loaded in this worker: no task, no await
            self._invoke(handler, headers, body, keep_alive)
            return

        async def resolve() -> Responder:
            loaded = await self.host.resolve(name, on_demand)
            return lambda keep: self._invoke(loaded, headers, body, keep)

        self._defer(resolve(), keep_alive)

    # -- plumbing ------------------------------------------------------------------------------

    def _json(self, status: int, payload: object, keep_alive: bool) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", keep_alive)

    def _error(self, exc: BaseException, keep_alive: bool) -> None:
        if isinstance(exc, ModelApiError):
            self._json(exc.status_code, {"code": exc.status_code, "type": exc.wire_type,
                                         "message": str(exc)}, keep_alive)
            return
        super()._error(exc, keep_alive)

    def _defer(self, work: Coroutine[Any, Any, Responder], keep_alive: bool) -> None:
        """Run a route that awaits; this connection reads no further request meanwhile."""
        self.busy = True
        self._task = asyncio.get_running_loop().create_task(self._finish(work, keep_alive))

    async def _finish(self, work: Coroutine[Any, Any, Responder], keep_alive: bool) -> None:
        respond: Responder
        try:
            respond = await work
        except Exception as exc:
            def respond(keep: bool, exc: Exception = exc) -> None:
                self._error(exc, keep)
        finally:
            self.busy = False
            self._task = None
        if self.transport is None or self.closing:
            return  # the client left while the model loaded
        respond(keep_alive and not self.worker.draining)
        if not self.busy and not self.closing:
            self._process()
