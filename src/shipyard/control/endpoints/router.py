"""Routing InvokeEndpoint to the instances of an endpoint's live deployment.

The routing table (each endpoint's deployment: variants, weights, instances that passed their
health check), in-flight counts and pooled upstream connections, and the invocation itself:
the variant by weight (or ``TargetVariant``), then the instance with the fewest requests in
flight; the request is forwarded over a pooled connection. A request that never reached its
container (refused, or cut off before the container took a byte of it) goes to another
instance of the variant, and the instance that failed it is passed over for a while (a dead
container fails fast, so by in-flight count it would look the least busy).

Two users: ``EndpointManager`` (``control.endpoints``), which deploys and routes to what it
deployed, and the data-plane process (``api.dataplane``), which only routes, to what the
managing plane recorded in the store (``adopt_routes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.contract.serving import INVOCATIONS_PATH
from shipyard.control.context import Context, runtime_for
from shipyard.control.endpoints.invocation import (
    InvokeDone,
    InvokeRequest,
    InvokeResult,
    InvokeStream,
)
from shipyard.control.endpoints.serving import Instance, VariantSpec, remove_tree
from shipyard.control.endpoints.upstream import BodyTooLarge, Response, Upstream, UpstreamError
from shipyard.control.metrics.invocations import NO_ANSWER, InvocationMetrics
from shipyard.control.unpack import safe_extract
from shipyard.errors import (
    InvokeValidationError,
    ModelError,
    ResourceNotFound,
    ServiceUnavailable,
    ShipyardError,
)
from shipyard.settings import Settings

log = logging.getLogger(__name__)

KIND = "endpoint"
UPDATING = "Updating"
IN_SERVICE = "InService"
#: How long an instance that could not be reached is passed over: long enough for the monitor
#: to see a dead container and replace it, short enough that a live one soon gets traffic again.
SUSPECT_SECONDS = 2.0
#: Further instances a request that reached none is tried on.
MAX_RETRIES = 2
_clock = time.perf_counter

@dataclass
class Variant:
    spec: VariantSpec
    workdir: Path
    model_dir: Path
    instances: list[Instance] = field(default_factory=list)


@dataclass
class Deployment:
    uid: str
    config_name: str
    variants: dict[str, Variant]

    def instances(self) -> list[Instance]:
        return [i for v in self.variants.values() for i in v.instances]

class Router:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._lock = threading.RLock()
        self._live: dict[str, Deployment] = {}
        self._inflight: dict[str, int] = {}
        #: Containers that could not be reached, and until when they are passed over.
        self._suspect: dict[str, float] = {}
        self._mme_locks: dict[str, threading.Lock] = {}
        #: Routes adopted from the store by ``adopt_routes``, by endpoint: runner state text.
        self._adopted: dict[str, str] = {}
        self._adopting = threading.Lock()
        self._upstreams: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Upstream] = (
            weakref.WeakKeyDictionary())
        #: ``AWS/SageMaker`` invocation metrics of the requests this process routes.
        self.invocation_metrics = InvocationMetrics(ctx.settings)

    # -- routing without deploying (the data-plane process) ---------------------------------
    @classmethod
    def standalone(cls, settings: Settings) -> Router:
        """A router of its own over the data directory's state, for a process that only
        answers invocations; it routes once :meth:`adopt_routes` has run."""
        return cls(Context.build(settings, runtime_for(settings)))

    def state_version(self) -> int:
        """Changes whenever another process changed the state (new routes, maybe)."""
        return self.ctx.store.data_version()

    def adopt_routes(self) -> None:
        """Route to what the store says each InService (or Updating) endpoint runs, as the
        managing plane recorded it: for a process that answers InvokeEndpoint and manages
        nothing. Endpoints whose record did not change keep their objects."""
        # One read-and-install at a time: an older read never replaces a newer one.
        with self._adopting:
            self._adopt_routes()

    def _adopt_routes(self) -> None:
        rows = self.ctx.store.list_jobs(KIND, statuses=(IN_SERVICE, UPDATING), limit=100_000)
        live: dict[str, Deployment] = {}
        adopted: dict[str, str] = {}
        dead: set[str] = set()
        for row in rows:
            if not row.runner.get("uid"):
                continue
            dead.update(row.runner.get("dead") or [])
            text = json.dumps([row.runner.get(k) for k in _ROUTE_KEYS], sort_keys=True)
            with self._lock:
                same = self._adopted.get(row.name) == text and row.name in self._live
                current = self._live.get(row.name)
            try:
                live[row.name] = (current if same and current is not None
                                  else deployment_of(self.ctx.settings.data_dir, row.name,
                                                     row.runner))
            except (TypeError, KeyError, ValueError) as exc:
                log.warning("endpoint %s: cannot route from its record: %s", row.name, exc)
                continue
            adopted[row.name] = text
        with self._lock:
            gone = [i for name, d in self._live.items() for i in d.instances()
                    if live.get(name) is not d]
            self._live, self._adopted = live, adopted
        routed = {j.container for d in live.values() for j in d.instances()}
        gone = [i for i in gone if i.container not in routed]
        self._forget([i for i in gone if i.container not in dead])
        self._forget([i for i in gone if i.container in dead], dead=True)

    def routes(self, endpoint: str) -> bool:
        """Whether ``endpoint`` has a route (no lock: the table is replaced, never edited in
        place, by ``adopt_routes``)."""
        return endpoint in self._live

    def routes_to(self, containers: list[str]) -> bool:
        """Whether any of ``containers`` is still routed to or has a request in flight."""
        with self._lock:
            routed = {i.container for d in self._live.values() for i in d.instances()}
            return any(c in routed or self._inflight.get(c) for c in containers)

    def _forget(self, instances: list[Instance], *, dead: bool = False) -> None:
        """Drop pooled connections to instances that are going away, on each pool's own
        event loop (the pools belong to the loops that opened them); ``dead``: their
        containers are gone, so requests still waiting on them fail now (a retired fleet's
        finish instead)."""
        for loop, upstream in list(self._upstreams.items()):
            for instance in instances:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(upstream.forget, instance.address, dead)

    # -- invoke -----------------------------------------------------------------------------
    def _route(self, req: InvokeRequest, retry: _Retry | None = None
               ) -> tuple[Variant, Instance]:
        """The instance to send ``req`` to; on a retry, one of the same variant that the
        request has not tried yet (none left: the error that ended the last try)."""
        with self._lock:
            deployment = self._live.get(req.endpoint)
            if deployment is None:
                raise self._not_in_service(req.endpoint)
            if retry is not None:
                # By name: an update may have put a new fleet in place meanwhile.
                variant = deployment.variants.get(retry.variant)
                if variant is None:
                    raise retry.error
            elif req.target_variant:
                variant = deployment.variants.get(req.target_variant)
                if variant is None:
                    raise InvokeValidationError(
                        f"The variant {req.target_variant} is not part of endpoint "
                        f"{req.endpoint}.")
            else:
                variant = _pick_variant(deployment)
                if variant is None:
                    raise InvokeValidationError(
                        f"Every production variant of endpoint {req.endpoint} has weight 0; "
                        "name one with TargetVariant.")
            instances = variant.instances
            if retry is not None:
                instances = [i for i in instances if i.container not in retry.tried]
                if not instances:
                    raise retry.error
            if self._suspect:
                instances = self._unsuspected(instances)
            if not instances:
                raise ServiceUnavailable(
                    f"No instance of variant {variant.spec.name} of endpoint {req.endpoint} is "
                    "healthy right now; a replacement is starting.")
            instance = min(instances,
                           key=lambda i: (self._inflight.get(i.container, 0), random.random()))
            self._inflight[instance.container] = self._inflight.get(instance.container, 0) + 1
            return variant, instance

    def _unsuspected(self, instances: list[Instance]) -> list[Instance]:
        """``instances`` less those recently unreachable; all of them when every one is (a
        refusal is cheap, and the monitor, not routing, decides that an instance is gone).
        Hold the lock."""
        now = time.monotonic()
        for container, until in list(self._suspect.items()):
            if until <= now:
                del self._suspect[container]
        return [i for i in instances if i.container not in self._suspect] or instances

    def _suspect_instance(self, instance: Instance) -> None:
        with self._lock:
            self._suspect[instance.container] = time.monotonic() + SUSPECT_SECONDS

    def _answered(self, instance: Instance) -> None:
        """``instance`` answered: it is reachable again."""
        with self._lock:
            self._suspect.pop(instance.container, None)

    def _retry(self, exc: UpstreamError, variant: Variant, instance: Instance,
               retry: _Retry | None, error: ShipyardError) -> _Retry | None:
        """What to try next after ``instance`` failed ``exc``, or None to answer ``error``.

        Only a request the container never took goes elsewhere: one it may have taken could
        have changed the model's state or cost it work, and InvokeEndpoint is not idempotent.
        """
        if exc.sent:
            return None
        self._suspect_instance(instance)
        tried = (retry.tried if retry is not None else ()) + (instance.container,)
        if len(tried) > MAX_RETRIES:
            return None
        return _Retry(variant.spec.name, tried, error)

    def _done(self, instance: Instance) -> None:
        with self._lock:
            left = self._inflight.get(instance.container, 1) - 1
            if left:
                self._inflight[instance.container] = left
            else:
                self._inflight.pop(instance.container, None)

    def _not_in_service(self, name: str) -> InvokeValidationError:
        account = self.ctx.settings.account_id
        try:
            status = self.ctx.store.get_job(KIND, name).status
        except ResourceNotFound:
            return InvokeValidationError(f"Endpoint {name} of account {account} not found.")
        return InvokeValidationError(f"Endpoint {name} of account {account} is in status "
                                     f"{status}; it takes invocations once it is InService.")

    def _upstream(self) -> Upstream:
        # One pool per event loop: connections belong to the loop that opened them.
        loop = asyncio.get_running_loop()
        upstream = self._upstreams.get(loop)
        if upstream is None:
            upstream = self._upstreams[loop] = Upstream()
        return upstream

    async def _pick(self, req: InvokeRequest, retry: _Retry | None = None
                    ) -> tuple[Variant, Instance]:
        variant, instance = self._route(req, retry)
        if variant.spec.multi_model:
            try:
                fetch = self._model_fetch(req, variant)
                if fetch is not None:
                    await fetch
            except BaseException:
                self._done(instance)
                raise
        return variant, instance

    def invoke_soon(self, req: InvokeRequest, done: InvokeDone) -> None:
        """Start an invocation; ``done`` gets the result, or the error, exactly once.

        Callbacks all the way (the upstream's answer reaches ``done`` from its
        ``data_received``): on InvokeEndpoint's hot path a coroutine and a Task per request
        cost the API server more than routing and forwarding together. Call on the event loop.
        """
        self._invoke_attempt(req, done, None, _clock())

    async def invoke(self, req: InvokeRequest) -> InvokeResult:
        """``invoke_soon`` for coroutines."""
        future: asyncio.Future[InvokeResult] = asyncio.get_running_loop().create_future()

        def done(result: InvokeResult | None, exc: BaseException | None) -> None:
            if future.done():
                return
            if result is None:
                future.set_exception(exc or AssertionError("no result"))
            else:
                future.set_result(result)

        self.invoke_soon(req, done)
        return await future

    def _invoke_attempt(self, req: InvokeRequest, done: InvokeDone, retry: _Retry | None,
                        started: float) -> None:
        try:
            variant, instance = self._route(req, retry)
        except BaseException as exc:
            done(None, exc)
            return
        if variant.spec.multi_model:
            try:
                fetch = self._model_fetch(req, variant)
            except BaseException as exc:
                self._done(instance)
                done(None, exc)
                return
            if fetch is not None:
                def fetched(future: asyncio.Future[None]) -> None:
                    exc = None if future.cancelled() else future.exception()
                    if future.cancelled() or exc is not None:
                        self._done(instance)
                        done(None, exc or asyncio.CancelledError())
                        return
                    self._forward(req, variant, instance, done, retry, started)

                fetch.add_done_callback(fetched)
                return
        self._forward(req, variant, instance, done, retry, started)

    def _forward(self, req: InvokeRequest, variant: Variant, instance: Instance,
                 done: InvokeDone, retry: _Retry | None, started: float) -> None:
        settings = self.ctx.settings

        def answered(response: Response | None, exc: BaseException | None) -> None:
            took = _clock() - sent
            self._done(instance)
            if self._suspect and response is not None:
                self._answered(instance)
            if response is None:
                if isinstance(exc, UpstreamError):
                    error = self._model_error(req.endpoint, variant, 0, str(exc))
                    again = self._retry(exc, variant, instance, retry, error)
                    if again is not None:
                        self._invoke_attempt(req, done, again, started)
                        return
                    exc = error
                elif isinstance(exc, asyncio.TimeoutError):
                    exc = self._timeout(req.endpoint, variant)
                elif isinstance(exc, BodyTooLarge):
                    exc = self._model_error(
                        req.endpoint, variant, 0, f"The response payload ({exc}) is over the "
                        f"{settings.invoke_max_payload_bytes} byte limit.")
                done(None, exc)
                self._record(req, variant, NO_ANSWER, -1.0, started)
                return
            if response.status >= 400:
                done(None, self._model_error(req.endpoint, variant, response.status,
                                             response.body.decode("utf-8", "replace")))
                self._record(req, variant, response.status, took, started)
                return
            done(InvokeResult(
                body=response.body,
                content_type=response.headers.get("content-type", "application/octet-stream"),
                variant=variant.spec.name,
                custom_attributes=response.headers.get(
                    "x-amzn-sagemaker-custom-attributes")), None)
            self._record(req, variant, response.status, took, started)

        sent = _clock()
        try:
            # The timeout is the upstream's own timer: asyncio.wait_for would add a Task (and
            # a loop iteration) to every call.
            self._upstream().submit(
                instance.address, "POST", INVOCATIONS_PATH, req.container_headers(), req.body,
                max_body=settings.invoke_max_payload_bytes,
                timeout=settings.invoke_timeout_seconds, done=answered)
        except BaseException as exc:
            answered(None, exc)

    def _record(self, req: InvokeRequest, variant: Variant, status: int, took: float,
                started: float) -> None:
        """Count one request (after its answer went back: off its latency)."""
        self.invocation_metrics.record(req.endpoint, variant.spec.name, len(variant.instances),
                                       status, took, _clock() - started)

    async def invoke_stream(self, req: InvokeRequest) -> InvokeStream:
        """Metrics: ModelLatency is the time to the answer's head."""
        retry: _Retry | None = None
        started = _clock()
        while True:
            variant, instance = await self._pick(req, retry)
            sent = _clock()
            try:
                stream = await self._stream_from(req, variant, instance)
            except UpstreamError as exc:
                error = self._model_error(req.endpoint, variant, 0, str(exc))
                retry = self._retry(exc, variant, instance, retry, error)
                if retry is None:
                    self._record(req, variant, NO_ANSWER, -1.0, started)
                    raise error from None
                continue
            except ModelError as exc:
                status = exc.original_status_code
                self._record(req, variant, status, _clock() - sent if status else -1.0, started)
                raise
            self._record(req, variant, 200, _clock() - sent, started)
            return stream

    async def _stream_from(self, req: InvokeRequest, variant: Variant, instance: Instance
                           ) -> InvokeStream:
        """The answer of ``instance``, which holds an in-flight count for it; an
        UpstreamError (the instance is released) when no answer began."""
        settings = self.ctx.settings
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._done(instance)

        try:
            status, head, body = await asyncio.wait_for(self._upstream().stream(
                instance.address, "POST", INVOCATIONS_PATH, req.container_headers(), req.body),
                settings.invoke_timeout_seconds)
            if self._suspect:
                self._answered(instance)
            if status >= 400:
                data = b"".join([chunk async for chunk in body])
                raise self._model_error(req.endpoint, variant, status,
                                        data.decode("utf-8", "replace"))
        except asyncio.TimeoutError:
            release()
            raise self._timeout(req.endpoint, variant) from None
        except BaseException:
            release()
            raise

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in body:
                    yield chunk
            except UpstreamError as exc:
                raise self._model_error(req.endpoint, variant, 0, str(exc)) from None

        return InvokeStream(
            content_type=head.get("content-type", "application/octet-stream"),
            variant=variant.spec.name, chunks=_Releasing(chunks(), release),
            custom_attributes=head.get("x-amzn-sagemaker-custom-attributes"))

    def _log_group_arn(self, endpoint: str) -> str:
        s = self.ctx.settings
        return (f"arn:aws:logs:{s.region}:{s.account_id}:log-group:"
                f"/aws/sagemaker/Endpoints/{endpoint}")

    def _model_error(self, endpoint: str, variant: Variant, status: int,
                     message: str) -> ModelError:
        kind = "client" if 400 <= status < 500 else "server"
        return ModelError(
            f'Received {kind} error ({status}) from primary with message "{message}". See '
            f"the log group /aws/sagemaker/Endpoints/{endpoint} (variant "
            f"{variant.spec.name}) for more information.",
            original_status_code=status, original_message=message,
            log_stream_arn=self._log_group_arn(endpoint))

    def _timeout(self, endpoint: str, variant: Variant) -> ModelError:
        return self._model_error(
            endpoint, variant, 0, "Your invocation timed out while waiting for a response "
            f"from container primary after {self.ctx.settings.invoke_timeout_seconds:g} s. "
            "Review the container's latency, resolve the issue, and try again.")

    # -- multi-model endpoints --------------------------------------------------------------
    def _model_fetch(self, req: InvokeRequest, variant: Variant) -> asyncio.Future[None] | None:
        """None when ``req``'s TargetModel is in place; else its fetch, started in a thread."""
        if not req.target_model:
            raise InvokeValidationError(
                f"Endpoint {req.endpoint} is a multi-model endpoint: name the model with "
                "TargetModel.")
        target = req.target_model
        parts = Path(target).parts
        if Path(target).is_absolute() or ".." in parts or not parts:
            raise InvokeValidationError(f"TargetModel {target!r} is not a valid model name")
        dest = variant.workdir / "models" / target / "model"
        if dest.is_dir():
            return None
        return asyncio.get_running_loop().run_in_executor(
            None, self._fetch_model, variant, target, dest)

    def _fetch_model(self, variant: Variant, target: str, dest: Path) -> None:
        key = str(dest)
        with self._lock:
            lock = self._mme_locks.setdefault(key, threading.Lock())
        with lock:
            if dest.is_dir():
                return
            prefix = (variant.spec.model_data_url or "").rstrip("/")
            url = f"{prefix}/{target}"
            staging = dest.parent.with_name(dest.parent.name + f".{uuid.uuid4().hex[:6]}")
            try:
                if url.startswith("s3://"):
                    archive = self.ctx.s3.download_file(url, staging / "model.tar.gz")
                else:
                    archive = self.ctx.file_roots.path(url, "ModelDataUrl")
                    if not archive.is_file():
                        raise InvokeValidationError(
                            f"Could not find model data for TargetModel {target} at {url}.")
                safe_extract(archive, staging / "model")
                (staging / "model.tar.gz").unlink(missing_ok=True)
                dest.parent.parent.mkdir(parents=True, exist_ok=True)
                staging.rename(dest.parent)
            except InvokeValidationError:
                raise
            except ShipyardError as exc:
                raise InvokeValidationError(
                    f"Failed to download model data for TargetModel {target} from {url}: "
                    f"{exc.message}") from exc
            finally:
                remove_tree(staging)


@dataclass(frozen=True)
class _Retry:
    """A request that reached none of the instances it was sent to, sent again."""

    variant: str
    #: Containers that failed it.
    tried: tuple[str, ...]
    #: The answer when no other instance is left.
    error: ShipyardError


class _Releasing:
    """A stream's chunks that free their instance once exhausted, failed or closed, even
    when the consumer closes it before reading anything (a generator's ``finally`` would
    never run then)."""

    def __init__(self, chunks: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        self._chunks = chunks
        self._release = release

    def __aiter__(self) -> _Releasing:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._chunks.__anext__()
        except BaseException:
            self._release()
            raise

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            self._release()


def _pick_variant(deployment: Deployment) -> Variant | None:
    candidates = [v for v in deployment.variants.values() if v.spec.weight > 0]
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    point = random.random() * sum(v.spec.weight for v in candidates)
    for variant in candidates:
        point -= variant.spec.weight
        if point < 0:
            return variant
    return candidates[-1]


#: The runner state keys a route is made of (``runner_of``).
_ROUTE_KEYS = ("uid", "config", "specs", "model_dirs", "instances")


def deployment_of(data_dir: Path, name: str, runner: dict[str, Any]) -> Deployment:
    """The deployment an endpoint's runner state records (``runner_of``), as it was recorded:
    no container is asked whether it still runs."""
    uid = runner["uid"]
    base = data_dir / "endpoints" / name / uid
    deployment = Deployment(uid, runner.get("config", ""), {})
    for data in runner.get("specs") or []:
        spec = VariantSpec.from_json(data)
        workdir = base / spec.name
        model_dir = Path(runner.get("model_dirs", {}).get(spec.name) or workdir / "model")
        deployment.variants[spec.name] = Variant(spec, workdir, model_dir, [
            Instance(**raw) for raw in runner.get("instances", {}).get(spec.name, [])])
    return deployment


def runner_of(deployment: Deployment) -> dict[str, Any]:
    return {
        "uid": deployment.uid, "config": deployment.config_name,
        "specs": [v.spec.to_json() for v in deployment.variants.values()],
        "model_dirs": {n: str(v.model_dir) for n, v in deployment.variants.items()},
        "instances": {n: [i.__dict__ for i in v.instances]
                      for n, v in deployment.variants.items()},
    }
