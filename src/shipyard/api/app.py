"""The HTTP face of the control plane: one plain-ASGI app for every AWS protocol it speaks.

Routing, in order:
- ``GET /shipyard/health``: unauthenticated liveness probe used by the CLI;
- ``/console`` and below: the web console's pages (``shipyard.console``: its own login,
  session cookie and CSRF checks);
- ``POST /endpoints/{EndpointName}/invocations[-response-stream]``: sagemaker-runtime
  (rest-json, ``api.runtime``), on the hot path of inference;
- ``X-Amz-Target: SageMaker.<Op>``: the SageMaker control plane (awsJson1.1);
- ``X-Amz-Target: Logs_20140328.<Op>``: CloudWatch Logs, read side (awsJson1.1);
- ``X-Amz-Target: TrentService.<Op>``: KMS, the data keys of the S3 store's SSE-KMS
  (awsJson1.1, ``api.kms``);
- ``X-Amz-Target: GraniteServiceVersion20100801.<Op>``: CloudWatch metrics (awsJson1.0,
  ``api.cloudwatch``);
- a form-encoded ``Action=<Operation>``: the query protocol (XML), IAM's read side when
  signed for ``iam`` (``api.iam``), CloudWatch metrics when signed for ``monitoring``
  (``api.cloudwatch``), else STS's GetCallerIdentity (``api.sts``).

Every request is authenticated with SigV4 against the server's keys, then validated against
botocore's own model of the operation (the runtime checks its few headers itself; the control
plane checks its creates and UpdateEndpoint at its door), then handed to a handler. Errors
leave in AWS's envelope for the protocol (``{"__type", "message"}``, rest-json's
``x-amzn-ErrorType`` + ``{"message"}``, or the query protocol's XML); nothing else escapes.

Handlers are synchronous and may block (CreateTrainingJob asks the engine about the image and
reads the whole code archive), so they run off the event loop, in a thread pool of the app's
own (``HANDLER_THREADS``), as Starlette runs sync endpoints: the loop goes on answering
InvokeEndpoint meanwhile. SageMaker's Describe calls, one record read each and what SDK
waiters poll, and KMS's calls (microseconds each) are answered on the loop.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from shipyard.api import cloudwatch as cloudwatch_api
from shipyard.api import extensions, iam, kms, query, sigv4, sts, validation
from shipyard.api import logs as logs_api
from shipyard.api import runtime as runtime_api
from shipyard.api import sagemaker as sagemaker_api
from shipyard.api.asgi import Receive, Scope, Send, read_body
from shipyard.control import CHECKED_AT_DOOR, ControlPlane
from shipyard.errors import ApiError, ShipyardError, UnknownOperation

log = logging.getLogger(__name__)

Handler = Callable[[ControlPlane, dict[str, Any]], dict[str, Any]]

JSON_CONTENT_TYPE = b"application/x-amz-json-1.1"
#: Control-plane requests are small; a bigger body is refused before it is read whole.
MAX_BODY_BYTES = 16 * 1024 * 1024

TARGET_PREFIXES = {"SageMaker": "sagemaker", "Logs_20140328": "logs", "Shipyard": "shipyard",
                   kms.TARGET_PREFIX: "kms"}
#: Query-protocol services other than STS, by the service their requests are signed for.
QUERY_SERVICES = {"iam": "iam", cloudwatch_api.SIGNING_NAME: "monitoring"}
#: Services whose requests botocore has a model of (Shipyard's own validate themselves).
MODELLED = frozenset({"sagemaker", "logs", "kms"})
#: Handlers running at once; more wait their turn. One, as they ran on the loop: no request
#: path of the plane races another (a DeleteEndpoint between CreateEndpoint's insert and its
#: registering a cancel event), and each thread runnable lengthens the loop's waits for the
#: GIL. InvokeEndpoint p50/p99 during 20 creates with 50 MB archives, 2 CPUs: 3.7/29 ms with
#: 1 thread, 7.5/75 with 4, 11/51 with 32 (benchmarks/invoke_under_load.py).
HANDLER_THREADS = 1


class PayloadTooLarge(ApiError):
    code = "ValidationException"
    http_status = 413


class ShipyardApi:
    """``create_app``'s product: routes, authenticates, validates, dispatches."""

    def __init__(self, plane: ControlPlane, secrets: Mapping[str, str]) -> None:
        self._request_ids = RequestIds()
        #: Where handlers run: a pool of the app's own, made on the first request and shut
        #: down by :meth:`close`, unless another is set before (its owner shuts it down).
        self.executor: Executor | None = None
        self._own_pool: ThreadPoolExecutor | None = None
        self.plane = plane
        self.secrets = secrets
        self.handlers: dict[str, dict[str, Handler]] = {
            "sagemaker": dict(sagemaker_api.HANDLERS),
            "logs": dict(logs_api.HANDLERS),
            "shipyard": dict(extensions.HANDLERS),
            "kms": _with_key_ring(kms.KeyRing(plane.settings.data_dir, plane.settings.region,
                                              plane.settings.account_id)),
        }
        self.runtime = runtime_api.RuntimeApi(plane, secrets)
        # Imported here: the data plane process imports this module, not the console.
        from shipyard.console import Console

        #: The web console's pages, under ``/console`` (``shipyard.console``).
        self.console = Console(plane, secrets)
        #: Operations called but not implemented, each logged once.
        self._unimplemented_seen: set[str] = set()

    def new_request_id(self) -> str:
        return self._request_ids()

    def close(self) -> None:
        """Let the handlers under way finish, drop those not started, release the pool."""
        self.console.close()
        pool, self._own_pool = self._own_pool, None
        if pool is not None:
            if self.executor is pool:
                self.executor = None
            pool.shutdown(wait=True, cancel_futures=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.close)
            return
        if scope["type"] != "http":
            return
        request_id = self._request_ids()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        if method == "GET" and path == "/shipyard/health":
            await _respond(send, 200, b'{"status":"ok"}', b"application/json", request_id)
            return
        if self.console.handles(path):
            await self.console(scope, receive, send)
            return
        target = headers.get("x-amz-target", "")
        if not target and path.startswith(runtime_api.PATH_PREFIX):
            await self.runtime(scope, receive, send, headers, request_id)
            return
        protocol = "query" if not target and _is_form(headers) else "json"
        if protocol == "query":
            # Query services share one wire shape: the scope signed for says which is meant.
            protocol = QUERY_SERVICES.get(sigv4.signed_service(
                headers, scope.get("query_string", b"").decode("latin-1")), "query")
        elif target.startswith(cloudwatch_api.TARGET_PREFIX + "."):
            protocol = "cloudwatch"
        try:
            body = await _read_body(receive, headers)
            access_key = sigv4.verify(method, scope.get("raw_path", path.encode()).decode(
                "latin-1").split("?")[0], scope.get("query_string", b"").decode("latin-1"),
                headers, body, self.secrets)
            if protocol in ("cloudwatch", "monitoring"):
                await self._cloudwatch(send, protocol, target, body,
                                       headers.get("content-encoding", ""), request_id)
                return
            if protocol != "json":
                await self._query(send, protocol, body, access_key, request_id)
                return
            service, operation = self._route(method, target)
            if service == "kms" or (service == "sagemaker" and operation.startswith("Describe")
                                    and len(body) <= 4096):
                # One record read by its key (~0.1 ms), what SDK waiters poll, or a data key
                # sealed for the S3 store (~20 us; one per encrypted object): the trip to a
                # pool thread and back costs more (+0.15 ms of server CPU a request).
                payload = self._dispatch(service, operation, body)
            else:
                payload = await asyncio.get_running_loop().run_in_executor(
                    self._pool(), self._dispatch, service, operation, body)
            await _respond(send, 200, payload, JSON_CONTENT_TYPE, request_id)
        except ShipyardError as exc:
            await self._error(send, protocol, exc, request_id)
        except Exception as exc:
            log.error("request %s failed:\n%s", request_id, traceback.format_exc())
            await self._error(send, protocol, ShipyardError(
                f"Internal error ({type(exc).__name__}); request id {request_id}"), request_id)

    def _pool(self) -> Executor:
        if self.executor is None:
            self.executor = self._own_pool = ThreadPoolExecutor(
                HANDLER_THREADS, thread_name_prefix="shipyard-handler")
        return self.executor

    def _dispatch(self, service: str, operation: str, body: bytes) -> bytes:
        """Everything of a request that blocks or costs CPU in proportion to its size (a body
        at the 16 MB limit takes ~50 ms to parse), run in a pool thread. The signature check
        stays on the loop: ~20 us for a usual body, ~11 ms at the limit (hashlib)."""
        params = validation.parse_json_body(body)
        if service in MODELLED and operation not in CHECKED_AT_DOOR:
            # The plane checks the others at its door: each request is checked once.
            validation.validate(service, operation, params)
        result = self.handlers[service][operation](self.plane, params)
        return json.dumps(result, separators=(",", ":"), default=_json_default).encode()

    def _route(self, method: str, target: str) -> tuple[str, str]:
        prefix, _, operation = target.partition(".")
        service = TARGET_PREFIXES.get(prefix)
        if method != "POST" or service is None or operation not in self.handlers[service]:
            # AWS's code for an operation a service does not have, with a message AWS leaves
            # empty: a user must tell "not implemented" from "my setup is wrong".
            raise UnknownOperation(self._not_implemented(service or prefix or "?", operation))
        return service, operation

    def _not_implemented(self, service: str, operation: str) -> str:
        what = f"{service}:{operation}"
        if what not in self._unimplemented_seen:
            self._unimplemented_seen.add(what)
            log.warning("a client called %s, which Shipyard does not implement "
                        "(docs/api.md lists what it does)", what)
        return f"Shipyard does not implement {what} (docs/api.md lists what it implements)"

    async def _cloudwatch(self, send: Send, protocol: str, target: str, body: bytes,
                          encoding: str, request_id: str) -> None:
        """CloudWatch metrics in either protocol (``api.cloudwatch``), run in the pool (a
        query body is read there: it may come gzipped)."""
        if protocol == "cloudwatch":
            operation = target.partition(".")[2]
            if operation not in cloudwatch_api.HANDLERS:
                raise UnknownOperation(self._not_implemented("cloudwatch", operation))
            run = functools.partial(cloudwatch_api.answer_json, self.plane, operation, body,
                                    encoding)
        else:
            run = functools.partial(cloudwatch_api.answer_query, self.plane, body, encoding,
                                    request_id, self._not_implemented)
        reply = await asyncio.get_running_loop().run_in_executor(self._pool(), run)
        await _respond(send, reply.status, reply.payload, reply.content_type, request_id,
                       extra=reply.headers)

    async def _query(self, send: Send, protocol: str, body: bytes, access_key: str,
                     request_id: str) -> None:
        params = sts.parse_query_body(body)
        action = params.get("Action", "")
        account = self.plane.settings.account_id
        if protocol == "iam" and action in iam.OPERATIONS:
            status, payload = iam.answer(account, params, request_id=request_id)
        elif protocol != "iam" and action == "GetCallerIdentity":
            status, payload = 200, sts.get_caller_identity(account, access_key,
                                                           request_id=request_id)
        else:
            # AWS's code for an action a query service lacks, in Shipyard's words.
            service = "iam" if protocol == "iam" else "sts"
            document = iam.error if protocol == "iam" else sts.query_error
            status, payload = 400, document(
                "InvalidAction", self._not_implemented(service, action), 400, request_id)
        await _respond(send, status, payload, b"text/xml", request_id)

    async def _error(self, send: Send, protocol: str, exc: ShipyardError,
                     request_id: str) -> None:
        if protocol in ("cloudwatch", "monitoring"):
            reply = cloudwatch_api.error_reply("json" if protocol == "cloudwatch" else "query",
                                               exc, request_id)
            await _respond(send, reply.status, reply.payload, reply.content_type, request_id,
                           extra=reply.headers)
            return
        if protocol != "json":
            document = iam.error if protocol == "iam" else sts.query_error
            code = query.AUTH_CODES.get(exc.code, exc.code)
            payload = document(code, exc.message, exc.http_status, request_id)
            await _respond(send, exc.http_status, payload, b"text/xml", request_id)
            return
        payload = json.dumps({"__type": exc.code, "message": exc.message}).encode()
        await _respond(send, exc.http_status, payload, JSON_CONTENT_TYPE, request_id,
                       error_type=exc.code)


class RequestIds:
    """UUID-shaped request ids: a random prefix per server and a counter (uuid4 per request
    costs more than the rest of a request's bookkeeping)."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:20]
        self._next = itertools.count()

    def __call__(self) -> str:
        p = self._prefix
        return f"{p[:8]}-{p[8:12]}-{p[12:16]}-{p[16:20]}-{next(self._next):012x}"


def operations_doc() -> str:
    """docs/api.md: every operation the server answers, from the tables it routes by."""
    tables: dict[str, Mapping[str, object]] = {
        "sagemaker": sagemaker_api.HANDLERS, "logs": logs_api.HANDLERS,
        "shipyard": extensions.HANDLERS, "kms": kms.HANDLERS,
        "cloudwatch": cloudwatch_api.HANDLERS}
    protocols = {"sagemaker": "awsJson1.1, `X-Amz-Target: SageMaker.<Operation>`",
                 "logs": "awsJson1.1, `X-Amz-Target: Logs_20140328.<Operation>`",
                 "shipyard": "awsJson1.1, `X-Amz-Target: Shipyard.<Operation>` "
                             "(Shipyard's own)",
                 "kms": "awsJson1.1, `X-Amz-Target: TrentService.<Operation>` (the SSE-KMS "
                        "keys of the S3 store, `api.kms`)",
                 "cloudwatch": "metrics: awsJson1.0, `X-Amz-Target: "
                               "GraniteServiceVersion20100801.<Operation>`, or the query "
                               "protocol, `Action=<Operation>` signed for `monitoring`; "
                               "docs/metrics.md"}
    lines = ["# Operations the API implements", "",
             "Generated from the server's routing tables (`shipyard.api.app.operations_doc`; "
             "tests/test_api_docs.py fails when this file drifts). Any other operation is "
             "answered `UnknownOperationException` (`InvalidAction` over the query "
             "protocol) with the message `Shipyard does not implement "
             "<service>:<Operation>`, and logged once.", ""]
    for service, table in tables.items():
        lines += [f"## {service} ({protocols[service]})", ""]
        lines += [f"- {name}" for name in sorted(table)]
        lines.append("")
    lines += ["## sagemaker-runtime (rest-json, `POST /endpoints/<EndpointName>/<path>`)", ""]
    lines += [f"- {name} (`{path}`)" for path, name in sorted(runtime_api.OPERATIONS.items(),
                                                             key=lambda kv: kv[1])]
    lines += ["", "## sts (query protocol, `Action=<Operation>`)", "", "- GetCallerIdentity", ""]
    lines += ["## iam (query protocol, `Action=<Operation>`, signed for `iam`)", ""]
    lines += [f"- {name}" for name in sorted(iam.OPERATIONS)]
    lines.append("")
    return "\n".join(lines)


def create_app(plane: ControlPlane, secrets: Mapping[str, str]) -> ShipyardApi:
    """The ASGI app over ``plane``, accepting requests signed with any of ``secrets``."""
    return ShipyardApi(plane, secrets)


def _with_key_ring(ring: kms.KeyRing) -> dict[str, Handler]:
    """KMS's handlers as the app calls handlers: they need the key ring, not the plane."""
    def bind(handler: kms.Handler) -> Handler:
        return lambda plane, params: handler(ring, params)
    return {name: bind(handler) for name, handler in kms.HANDLERS.items()}


def _is_form(headers: Mapping[str, str]) -> bool:
    return headers.get("content-type", "").startswith("application/x-www-form-urlencoded")


def _json_default(value: Any) -> Any:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


async def _read_body(receive: Receive, headers: Mapping[str, str]) -> bytes:
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"Request body of {declared} bytes is over the "
                              f"{MAX_BODY_BYTES} byte limit")
    return await read_body(receive, MAX_BODY_BYTES, lambda: PayloadTooLarge(
        f"Request body is over the {MAX_BODY_BYTES} byte limit"))


async def _respond(send: Send, status: int, payload: bytes, content_type: bytes,
                   request_id: str, *, error_type: str | None = None,
                   extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(payload)).encode()),
        (b"x-amzn-requestid", request_id.encode()),
        *extra,
    ]
    if error_type:
        headers.append((b"x-amzn-errortype", error_type.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _lifespan(receive: Receive, send: Send, close: Callable[[], None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            close()
            await send({"type": "lifespan.shutdown.complete"})
            return


__all__ = ["ShipyardApi", "create_app"]
