"""Real-time endpoints: deployments of an endpoint config, traffic routing, self-healing.

An endpoint's state lives in the store (its DescribeEndpoint document, and in the runner the
variant specs and container names of the deployment serving it), so a restarted control plane
reattaches to the containers still answering ``/ping`` and restarts the others. Traffic state
lives here, in memory: for each endpoint the instances that passed their health check, their
in-flight counts, and the variants' weights.

- Create: prepare each variant's model folder, start ``InitialInstanceCount`` containers per
  variant, wait for ``/ping``; InService, or Failed with the reason and nothing left running.
- Update (blue/green): the new config's fleet starts beside the old one; traffic moves in one
  step once every new instance is healthy; old instances leave the routing table, finish their
  in-flight requests, then get SIGTERM (SIGKILL 30 s later). A new fleet that fails is removed
  and the old one keeps serving (FailureReason says why).
- A monitor replaces any instance whose container exits; until then its variant's other
  instances take the traffic.
- Invoke: the variant by weight (or ``TargetVariant``), then the instance with the fewest
  requests in flight; the request is forwarded over a pooled connection. A request that never
  reached its container (refused, or cut off before the container took a byte of it) goes to
  another instance of the variant, and the instance that failed it is passed over for a while
  (a dead container fails fast, so by in-flight count it would look the least busy).
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shipyard.contract import names
from shipyard.contract.archives import safe_extract
from shipyard.contract.serving import (
    INVOCATIONS_PATH,
    SERVING_PORT,
    SERVING_STOP_GRACE_SECONDS,
)
from shipyard.control import models, records, recovery
from shipyard.control.context import Context
from shipyard.control.invocation import InvokeDone, InvokeRequest, InvokeResult, InvokeStream
from shipyard.control.locks import JobLock
from shipyard.control.serving import (
    DEPLOYMENT_LABEL,
    Instance,
    StartupFailed,
    VariantSpec,
    direct_route,
    follow_logs,
    ping,
    prepare_model_dir,
    remove_owner_network,
    remove_tree,
    start_instance,
    stop_instance,
    variant_spec,
    wait_healthy,
)
from shipyard.control.upstream import BodyTooLarge, Response, Upstream, UpstreamError
from shipyard.errors import (
    InvokeValidationError,
    ModelError,
    ResourceInUse,
    ResourceNotFound,
    ServiceUnavailable,
    ShipyardError,
    ValidationError,
)
from shipyard.runtimes.base import JOB_KIND_LABEL, JOB_NAME_LABEL

log = logging.getLogger(__name__)

KIND = "endpoint"
CREATING = "Creating"
UPDATING = "Updating"
IN_SERVICE = "InService"
DELETING = "Deleting"
FAILED = "Failed"
#: How often the monitor looks for dead containers.
MONITOR_INTERVAL_SECONDS = 0.5
#: How long an instance that could not be reached is passed over: long enough for the monitor
#: to see a dead container and replace it, short enough that a live one soon gets traffic again.
SUSPECT_SECONDS = 2.0
#: Further instances a request that reached none is tried on.
MAX_RETRIES = 2


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


class EndpointManager:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._lock = threading.RLock()
        self._live: dict[str, Deployment] = {}
        self._inflight: dict[str, int] = {}
        #: Containers that could not be reached, and until when they are passed over.
        self._suspect: dict[str, float] = {}
        self._replacing: set[str] = set()
        self._cancel: dict[str, threading.Event] = {}
        self._mme_locks: dict[str, threading.Lock] = {}
        self._finishing: dict[threading.Thread, str] = {}
        #: Other routers of these endpoints (the data-plane process): a retiring fleet is
        #: stopped once each says it routes nothing to it any more (containers, timeout).
        self.drains: list[Callable[[list[str], float], None]] = []
        #: Routes adopted from the store by ``adopt_routes``, by endpoint: runner state text.
        self._adopted: dict[str, str] = {}
        self._adopting = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._closed = threading.Event()
        self._upstreams: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Upstream] = (
            weakref.WeakKeyDictionary())
        self._ownership = JobLock(ctx.settings.data_dir / "locks" / "endpoints.lock")

    # -- records ----------------------------------------------------------------------------
    def _arn(self, kind: str, name: str) -> str:
        return records.job_arn(kind, name, self.ctx.settings.region,
                               self.ctx.settings.account_id)

    def _get(self, kind: str, name: str) -> dict[str, Any]:
        try:
            return self.ctx.store.get_job(kind, name).record
        except ResourceNotFound:
            raise models.not_found(kind, self._arn(kind, name)) from None

    def _mutate(self, name: str, change: Any) -> None:
        try:
            self.ctx.store.mutate(KIND, name, change)
        except ResourceNotFound:
            pass  # deleted meanwhile

    def _set_status(self, name: str, status: str, **fields: Any) -> None:
        at = records.now()

        def change(rec: dict[str, Any], run: dict[str, Any]) -> str:
            rec.update({k: v for k, v in fields.items() if v is not None})
            for key in [k for k, v in fields.items() if v is None]:
                rec.pop(key, None)
            rec["EndpointStatus"] = status
            rec["LastModifiedTime"] = at
            return status
        self._mutate(name, change)

    def describe(self, name: str) -> dict[str, Any]:
        return self._get(KIND, name)

    # -- create / update / delete -----------------------------------------------------------
    def create(self, request: dict[str, Any]) -> str:
        name = request.get("EndpointName")
        config_name = request.get("EndpointConfigName")
        if not isinstance(name, str) or not isinstance(config_name, str):
            raise ValidationError("EndpointName and EndpointConfigName are required")
        names.check_job_name(name, "endpointName")
        config = self._get(models.CONFIG_KIND, config_name)
        specs = self._specs(config)
        arn = self._arn(KIND, name)
        at = records.now()
        record = {"EndpointName": name, "EndpointArn": arn, "EndpointConfigName": config_name,
                  "ProductionVariants": _variant_summaries(specs, 0),
                  "EndpointStatus": CREATING, "CreationTime": at, "LastModifiedTime": at}
        try:
            self.ctx.store.insert_job(KIND, name, arn, CREATING, record, {})
        except ResourceInUse:
            raise ValidationError(f'Cannot create already existing endpoint "{arn}".') from None
        self._start_thread(f"deploy-{name}", self._deploy_new, name, config_name, specs,
                           self._cancellable(name))
        return arn

    def update(self, request: dict[str, Any]) -> str:
        name, config_name = request.get("EndpointName"), request.get("EndpointConfigName")
        if not isinstance(name, str) or not isinstance(config_name, str):
            raise ValidationError("EndpointName and EndpointConfigName are required")
        record = self._get(KIND, name)
        config = self._get(models.CONFIG_KIND, config_name)
        specs = self._specs(config)

        def begin(rec: dict[str, Any], run: dict[str, Any]) -> str:
            # Checked and changed in one transaction: of two concurrent updates, one wins.
            status = rec["EndpointStatus"]
            if status != IN_SERVICE:
                raise ValidationError(
                    f'Cannot update in-progress endpoint "{rec["EndpointArn"]}".'
                    if status in (CREATING, UPDATING) else
                    f"Endpoint {name} is in status {status}; only an InService endpoint can "
                    "be updated.")
            rec["EndpointStatus"], rec["LastModifiedTime"] = UPDATING, records.now()
            return UPDATING

        try:
            self.ctx.store.mutate(KIND, name, begin)
        except ResourceNotFound:
            raise models.not_found(KIND, self._arn(KIND, name)) from None
        self._start_thread(f"update-{name}", self._deploy_update, name, config_name, specs,
                           self._cancellable(name))
        return str(record["EndpointArn"])

    def delete(self, name: str) -> None:
        first = False

        def begin(rec: dict[str, Any], run: dict[str, Any]) -> str:
            nonlocal first
            first = rec["EndpointStatus"] != DELETING
            rec["EndpointStatus"], rec["LastModifiedTime"] = DELETING, records.now()
            return DELETING

        try:
            self.ctx.store.mutate(KIND, name, begin)
        except ResourceNotFound:
            raise models.not_found(KIND, self._arn(KIND, name)) from None
        if not first:
            return  # a delete is already under way
        with self._lock:
            cancel = self._cancel.get(name)
            if cancel is not None:
                cancel.set()
            deployment = self._live.pop(name, None)
        self._start_thread(f"delete-{name}", self._tear_down, name, deployment,
                           finishing=f"endpoint {name}: deletion")

    def _cancellable(self, name: str) -> threading.Event:
        """The event DeleteEndpoint sets to stop ``name``'s deployment; registered before its
        thread starts, so a delete that comes first still reaches it."""
        with self._lock:
            cancel = self._cancel[name] = threading.Event()
        return cancel

    def _specs(self, config: dict[str, Any]) -> list[VariantSpec]:
        default = self.ctx.settings.endpoint_startup_timeout_seconds
        specs = []
        for variant in config["ProductionVariants"]:
            model = self._get(models.MODEL_KIND, variant["ModelName"])
            specs.append(variant_spec(variant, model, default))
        return specs

    def _start_thread(self, label: str, target: Any, *args: Any,
                      finishing: str | None = None) -> None:
        """Run ``target`` on a thread of its own. ``finishing`` names work that removes
        containers (a delete, a retirement): a graceful stop waits for it (``close``)."""
        if finishing is None:
            threading.Thread(target=target, args=args, name=label, daemon=True).start()
            return

        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._finishing.pop(thread, None)

        thread = threading.Thread(target=run, name=label, daemon=True)
        with self._lock:
            self._finishing[thread] = finishing
        thread.start()

    # -- deployments ------------------------------------------------------------------------
    def _deploy(self, name: str, config_name: str, specs: list[VariantSpec],
                cancel: threading.Event) -> Deployment:
        """Start and health-check a whole fleet; on failure nothing of it is left running."""
        uid = uuid.uuid4().hex[:8]
        base = self.ctx.settings.data_dir / "endpoints" / name / uid
        deployment = Deployment(uid, config_name, {})
        self._mutate(name, lambda rec, run: run.setdefault("pending", []).append(uid))
        try:
            for spec in specs:
                workdir = base / spec.name
                model_dir = (workdir / "empty" if spec.multi_model else
                             prepare_model_dir(self.ctx, spec.model_data_url, workdir / "model"))
                model_dir.mkdir(parents=True, exist_ok=True)
                deployment.variants[spec.name] = Variant(spec, workdir, model_dir)
            for variant in deployment.variants.values():
                for _ in range(variant.spec.count):
                    variant.instances.append(self._start(name, uid, variant))
            for variant in deployment.variants.values():
                wait_healthy(self.ctx, variant.instances, variant.spec.startup_timeout, cancel)
                variant.instances = [direct_route(self.ctx, i) for i in variant.instances]
        except BaseException:
            for instance in deployment.instances():
                stop_instance(self.ctx, instance.container, 0)
            remove_tree(base)
            raise
        finally:
            self._mutate(name, lambda rec, run: run.get("pending", []).remove(uid)
                         if uid in run.get("pending", []) else None)
        return deployment

    def _start(self, name: str, uid: str, variant: Variant) -> Instance:
        instance = start_instance(self.ctx, owner_kind=KIND, owner_name=name, deployment=uid,
                                  spec=variant.spec, model_dir=variant.model_dir,
                                  workdir=variant.workdir)
        follow_logs(self.ctx, KIND, name, instance)
        return instance

    def _deploy_new(self, name: str, config_name: str, specs: list[VariantSpec],
                    cancel: threading.Event) -> None:
        # A new endpoint that cannot start is Failed.
        done = self._run_deployment(name, config_name, specs, cancel, FAILED)
        if done is not None:
            self._commit(name, done[0])

    def _deploy_update(self, name: str, config_name: str, specs: list[VariantSpec],
                       cancel: threading.Event) -> None:
        # The old fleet never stopped serving: a failed update is back to InService, saying why.
        done = self._run_deployment(name, config_name, specs, cancel, IN_SERVICE)
        if done is None:
            return
        deployment, old = done
        self._commit(name, deployment, FailureReason=None)
        if old is not None:
            self._retire(old)

    def _run_deployment(self, name: str, config_name: str, specs: list[VariantSpec],
                        cancel: threading.Event, status_on_failure: str
                        ) -> tuple[Deployment, Deployment | None] | None:
        """Deploy and put the fleet in the routing table; returns it and the fleet it took
        the place of, or None when it failed (the status and reason are recorded) or a delete
        cancelled it (nothing of it is left)."""
        try:
            deployment = self._deploy(name, config_name, specs, cancel)
        except Exception as exc:
            self._settle(name, cancel)
            if not cancel.is_set():
                if not isinstance(exc, ShipyardError):  # a bug must not hang the endpoint
                    log.exception("deploying endpoint %s failed", name)
                reason = (_reason(exc) if isinstance(exc, ShipyardError)
                          else f"Internal error: {exc}")
                self._set_status(name, status_on_failure, FailureReason=reason)
            return None
        live, old = self._settle(name, cancel, deployment)
        if not live:
            self._tear_down(name, deployment, forget=False)
            return None
        return deployment, old

    def _settle(self, name: str, cancel: threading.Event, deployment: Deployment | None = None
                ) -> tuple[bool, Deployment | None]:
        """End a deployment's cancellable phase and, unless a delete cancelled it, put
        ``deployment`` in the routing table; returns (live, the deployment it replaced). One
        lock: a delete either cancels first, or finds the new deployment live and takes it
        down itself."""
        with self._lock:
            if self._cancel.get(name) is cancel:
                del self._cancel[name]
            if deployment is None or cancel.is_set():
                return False, None
            old = self._live.get(name)
            self._live[name] = deployment
            return True, old

    def _commit(self, name: str, deployment: Deployment, **fields: Any) -> None:
        """Record ``deployment`` (already in the routing table) as what the endpoint runs."""
        at = records.now()

        def change(rec: dict[str, Any], run: dict[str, Any]) -> str:
            if rec["EndpointStatus"] == DELETING:
                return DELETING  # a delete came in meanwhile and takes the fleet down
            rec.update(EndpointStatus=IN_SERVICE, EndpointConfigName=deployment.config_name,
                       LastModifiedTime=at,
                       ProductionVariants=_variant_summaries(
                           [v.spec for v in deployment.variants.values()], None, deployment))
            rec.update({k: v for k, v in fields.items() if v is not None})
            for key in [k for k, v in fields.items() if v is None]:
                rec.pop(key, None)
            run.update(_runner_of(deployment))
            return IN_SERVICE
        self._mutate(name, change)
        self._ensure_monitor()

    def _retire(self, deployment: Deployment) -> None:
        """Let an unrouted fleet finish its in-flight requests, then stop it."""
        deadline = time.monotonic() + self.ctx.settings.invoke_timeout_seconds + 5
        instances = deployment.instances()
        while time.monotonic() < deadline:
            with self._lock:
                if not any(self._inflight.get(i.container) for i in instances):
                    break
            time.sleep(0.02)
        for drain in self.drains:
            try:
                drain([i.container for i in instances], max(0.0, deadline - time.monotonic()))
            except Exception as exc:  # a router that cannot say: stop the fleet anyway
                log.warning("endpoint fleet %s: could not drain it elsewhere: %s",
                            deployment.uid, exc)
        self._forget(instances)
        threads = [threading.Thread(target=stop_instance, args=(
            self.ctx, i.container, SERVING_STOP_GRACE_SECONDS), daemon=True) for i in instances]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for variant in deployment.variants.values():
            remove_tree(variant.workdir)

    def _forget(self, instances: list[Instance]) -> None:
        """Drop pooled connections to instances that are going away, on each pool's own
        event loop (the pools belong to the loops that opened them)."""
        for loop, upstream in list(self._upstreams.items()):
            for instance in instances:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(upstream.forget, instance.address)

    def _tear_down(self, name: str, deployment: Deployment | None, forget: bool = True) -> None:
        if deployment is not None:
            self._retire(deployment)
        # Whatever else carries the endpoint's labels (a deployment interrupted mid-way).
        for container in self.ctx.runtime.list({JOB_KIND_LABEL: KIND, JOB_NAME_LABEL: name}):
            stop_instance(self.ctx, container, SERVING_STOP_GRACE_SECONDS)
        if forget:
            remove_owner_network(self.ctx, KIND, name)
            remove_tree(self.ctx.settings.data_dir / "endpoints" / name)
            self.ctx.store.delete_job(KIND, name)

    # -- monitor: replace dead instances ----------------------------------------------------
    def _ensure_monitor(self) -> None:
        with self._lock:
            if self._monitor is None or not self._monitor.is_alive():
                self._monitor = threading.Thread(target=self._watch, name="endpoint-monitor",
                                                 daemon=True)
                self._monitor.start()

    def _watch(self) -> None:
        while not self._closed.wait(MONITOR_INTERVAL_SECONDS):
            with self._lock:
                live = list(self._live.items())
            for name, deployment in live:
                for variant in deployment.variants.values():
                    for instance in list(variant.instances):
                        try:
                            state = self.ctx.runtime.inspect(instance.container)
                        except ShipyardError:
                            continue
                        if state is None or not state.running:
                            self._replace(name, deployment, variant, instance)

    def _replace(self, name: str, deployment: Deployment, variant: Variant,
                 dead: Instance) -> None:
        self._forget([dead])
        with self._lock:
            if dead in variant.instances:
                variant.instances.remove(dead)
            if dead.container in self._replacing:
                return
            self._replacing.add(dead.container)
        log.warning("endpoint %s: instance %s exited; replacing it", name, dead.container)
        self._record_counts(name, deployment)

        def run() -> None:
            try:
                try:
                    self.ctx.runtime.remove(dead.container)
                except ShipyardError:
                    pass
                for _ in range(3):
                    with self._lock:
                        if self._live.get(name) is not deployment:
                            return
                    instance = self._start(name, deployment.uid, variant)
                    try:
                        wait_healthy(self.ctx, [instance], variant.spec.startup_timeout)
                        instance = direct_route(self.ctx, instance)
                    except StartupFailed as exc:
                        log.warning("endpoint %s: replacement failed: %s", name, exc)
                        stop_instance(self.ctx, instance.container, 0)
                        continue
                    with self._lock:
                        if self._live.get(name) is not deployment:
                            stop_instance(self.ctx, instance.container, 0)
                            return
                        variant.instances.append(instance)
                    self._record_counts(name, deployment)
                    return
            except ShipyardError as exc:
                log.warning("endpoint %s: cannot replace %s: %s", name, dead.container, exc)
            finally:
                with self._lock:
                    self._replacing.discard(dead.container)

        self._start_thread(f"replace-{dead.container}", run)

    def _record_counts(self, name: str, deployment: Deployment) -> None:
        def change(rec: dict[str, Any], run: dict[str, Any]) -> None:
            if run.get("uid") != deployment.uid:
                return
            rec["ProductionVariants"] = _variant_summaries(
                [v.spec for v in deployment.variants.values()], None, deployment)
            run.update(_runner_of(deployment))
        self._mutate(name, change)

    # -- restart ----------------------------------------------------------------------------
    def reconcile(self) -> list[str]:
        """Take over endpoints after a restart: reattach healthy containers, restart the rest.
        Only one plane per data directory manages endpoints (the one holding the lock)."""
        if not self._ownership.acquire():
            return []
        said = []
        for row in self.ctx.store.list_jobs(KIND, limit=100_000):
            try:
                line = self._take_over(row.name, row.status, row.record, row.runner)
            except Exception as exc:
                with self._lock:
                    self._live.pop(row.name, None)
                line = recovery.set_aside(self.ctx, KIND, row.name,
                                          f"{type(exc).__name__}: {exc}")
            if line:
                said.append(line)
        for line in said:
            log.warning("%s", line)
        return said

    def _take_over(self, name: str, status: str, record: dict[str, Any],
                   runner: dict[str, Any]) -> str | None:
        if status == DELETING:
            self._start_thread(f"delete-{name}", self._tear_down, name, None,
                               finishing=f"endpoint {name}: deletion")
        elif status in (IN_SERVICE, UPDATING) and runner.get("uid"):
            return self._reattach(name, runner, status)
        elif status == CREATING:
            # The deployment's thread died with the old plane: start it over.
            cancel = self._cancellable(name)
            self._cleanup_pending(name, runner)
            try:
                specs = [VariantSpec.from_json(s) for s in runner.get("specs") or []]
                config = self._get(models.CONFIG_KIND, record["EndpointConfigName"])
                specs = specs or self._specs(config)
            except ShipyardError as exc:
                self._set_status(name, FAILED, FailureReason=_reason(exc))
                return None
            self._start_thread(f"deploy-{name}", self._deploy_new, name,
                               record["EndpointConfigName"], specs, cancel)
            return f"endpoint {name}: deployment restarted"
        return None

    # -- routing without deploying (the data-plane process) ---------------------------------
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
        for row in rows:
            if not row.runner.get("uid"):
                continue
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
        self._forget([i for i in gone if i.container not in {
            j.container for d in live.values() for j in d.instances()}])

    def routes(self, endpoint: str) -> bool:
        """Whether ``endpoint`` has a route (no lock: the table is replaced, never edited in
        place, by ``adopt_routes``)."""
        return endpoint in self._live

    def routes_to(self, containers: list[str]) -> bool:
        """Whether any of ``containers`` is still routed to or has a request in flight."""
        with self._lock:
            routed = {i.container for d in self._live.values() for i in d.instances()}
            return any(c in routed or self._inflight.get(c) for c in containers)

    def _cleanup_pending(self, name: str, runner: dict[str, Any]) -> None:
        for uid in runner.get("pending") or []:
            for container in self.ctx.runtime.list({JOB_NAME_LABEL: name,
                                                    DEPLOYMENT_LABEL: uid}):
                stop_instance(self.ctx, container, 0)
            # Its extracted model too, or every restart in that window keeps a copy.
            remove_tree(self.ctx.settings.data_dir / "endpoints" / name / uid)

        def forget(rec: dict[str, Any], run: dict[str, Any]) -> None:
            run.pop("pending", None)
        self._mutate(name, forget)

    def _reattach(self, name: str, runner: dict[str, Any], status: str) -> str:
        self._cleanup_pending(name, runner)
        uid = runner["uid"]
        deployment = deployment_of(self.ctx.settings.data_dir, name, runner)
        dead: list[tuple[Variant, Instance]] = []
        for variant in deployment.variants.values():
            recorded, variant.instances = variant.instances, []
            for instance in recorded:
                state = self.ctx.runtime.inspect(instance.container)
                if state is not None and instance.host == "127.0.0.1":
                    # The engine may have published the port anew (an engine restart).
                    instance = replace(instance, port=state.ports.get(SERVING_PORT, 0))
                if (state is not None and state.running
                        and ping(instance.port, host=instance.host) == 200):
                    variant.instances.append(instance)
                    follow_logs(self.ctx, KIND, name, instance)
                else:
                    dead.append((variant, instance))
        reattached = len(deployment.instances())
        with self._lock:
            self._live[name] = deployment
        self._commit(name, deployment)
        if status == UPDATING:
            # The update's new fleet died with the old plane; the old fleet serves on.
            self._set_status(name, IN_SERVICE, FailureReason=(
                "The control plane restarted during the update; the endpoint kept its "
                "previous configuration. Call UpdateEndpoint again."))
        # Containers of the endpoint that belong to no deployment now (a fleet the old plane
        # was retiring when it stopped): finish retiring them.
        known = {i.container for i in deployment.instances()} | {i.container for _, i in dead}
        strays = [c for c in self.ctx.runtime.list({JOB_KIND_LABEL: KIND, JOB_NAME_LABEL: name})
                  if c not in known]
        if strays:
            self._start_thread(f"retire-strays-{name}", self._retire_strays, name, strays, uid,
                               finishing=f"endpoint {name}: retiring {', '.join(strays)}")
        for variant, instance in dead:
            self._replace(name, deployment, variant, instance)
        self._mutate(name, lambda rec, run: run.update(reconciled={
            "at": time.time(), "reattached": reattached, "restarted": len(dead)}))
        return (f"endpoint {name}: reattached {reattached} instance(s), restarting "
                f"{len(dead)}")

    def _retire_strays(self, name: str, containers: list[str], keep: str) -> None:
        """Stop the containers of fleets no deployment owns any more, then remove their
        folders (every deployment folder of ``name`` but ``keep``'s)."""
        threads = [threading.Thread(target=stop_instance, daemon=True, args=(
            self.ctx, c, SERVING_STOP_GRACE_SECONDS)) for c in containers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        folder = self.ctx.settings.data_dir / "endpoints" / name
        try:
            # A deployment started meanwhile (an update) keeps its folder too.
            pending = set(self.ctx.store.get_job(KIND, name).runner.get("pending") or [])
        except ResourceNotFound:
            return  # deleted meanwhile: the deletion removes the whole folder
        with self._lock:
            live = self._live.get(name)
            keep_uids = {keep, *pending} | ({live.uid} if live is not None else set())
        if folder.is_dir():
            for child in folder.iterdir():
                if child.name not in keep_uids and child.is_dir():
                    remove_tree(child)

    def close(self, timeout: float = 0.0) -> list[str]:
        """Stop managing endpoints. Deletions and retirements under way get up to
        ``timeout`` seconds to finish; returns what is still unfinished then (the next plane
        on this data directory finishes it: a Deleting endpoint is deleted again)."""
        self._closed.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            pending = list(self._finishing.items())
        for thread, _ in pending:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [what for thread, what in pending if thread.is_alive()]
        self._ownership.release()
        return left

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
        self._invoke_attempt(req, done, None)

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

    def _invoke_attempt(self, req: InvokeRequest, done: InvokeDone, retry: _Retry | None
                        ) -> None:
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
                    self._forward(req, variant, instance, done, retry)

                fetch.add_done_callback(fetched)
                return
        self._forward(req, variant, instance, done, retry)

    def _forward(self, req: InvokeRequest, variant: Variant, instance: Instance,
                 done: InvokeDone, retry: _Retry | None) -> None:
        settings = self.ctx.settings

        def answered(response: Response | None, exc: BaseException | None) -> None:
            self._done(instance)
            if self._suspect and response is not None:
                self._answered(instance)
            if response is None:
                if isinstance(exc, UpstreamError):
                    error = self._model_error(req.endpoint, variant, 0, str(exc))
                    again = self._retry(exc, variant, instance, retry, error)
                    if again is not None:
                        self._invoke_attempt(req, done, again)
                        return
                    exc = error
                elif isinstance(exc, asyncio.TimeoutError):
                    exc = self._timeout(req.endpoint, variant)
                elif isinstance(exc, BodyTooLarge):
                    exc = self._model_error(
                        req.endpoint, variant, 0, f"The response payload ({exc}) is over the "
                        f"{settings.invoke_max_payload_bytes} byte limit.")
                done(None, exc)
                return
            if response.status >= 400:
                done(None, self._model_error(req.endpoint, variant, response.status,
                                             response.body.decode("utf-8", "replace")))
                return
            done(InvokeResult(
                body=response.body,
                content_type=response.headers.get("content-type", "application/octet-stream"),
                variant=variant.spec.name,
                custom_attributes=response.headers.get(
                    "x-amzn-sagemaker-custom-attributes")), None)

        try:
            # The timeout is the upstream's own timer: asyncio.wait_for would add a Task (and
            # a loop iteration) to every call.
            self._upstream().submit(
                instance.address, "POST", INVOCATIONS_PATH, req.container_headers(), req.body,
                max_body=settings.invoke_max_payload_bytes,
                timeout=settings.invoke_timeout_seconds, done=answered)
        except BaseException as exc:
            answered(None, exc)

    async def invoke_stream(self, req: InvokeRequest) -> InvokeStream:
        retry: _Retry | None = None
        while True:
            variant, instance = await self._pick(req, retry)
            try:
                return await self._stream_from(req, variant, instance)
            except UpstreamError as exc:
                error = self._model_error(req.endpoint, variant, 0, str(exc))
                retry = self._retry(exc, variant, instance, retry, error)
                if retry is None:
                    raise error from None

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


def _variant_summaries(specs: list[VariantSpec], current: int | None,
                       deployment: Deployment | None = None) -> list[dict[str, Any]]:
    summaries = []
    for spec in specs:
        count = current if current is not None else len(
            deployment.variants[spec.name].instances) if deployment else 0
        summaries.append({
            "VariantName": spec.name,
            "DeployedImages": [{"SpecifiedImage": spec.image, "ResolvedImage": spec.image,
                                "ResolutionTime": records.now()}],
            "CurrentWeight": spec.weight, "DesiredWeight": spec.weight,
            "CurrentInstanceCount": count, "DesiredInstanceCount": spec.count,
        })
    return summaries


#: The runner state keys a route is made of (``_runner_of``).
_ROUTE_KEYS = ("uid", "config", "specs", "model_dirs", "instances")


def deployment_of(data_dir: Path, name: str, runner: dict[str, Any]) -> Deployment:
    """The deployment an endpoint's runner state records (``_runner_of``), as it was recorded:
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


def _runner_of(deployment: Deployment) -> dict[str, Any]:
    return {
        "uid": deployment.uid, "config": deployment.config_name,
        "specs": [v.spec.to_json() for v in deployment.variants.values()],
        "model_dirs": {n: str(v.model_dir) for n, v in deployment.variants.items()},
        "instances": {n: [i.__dict__ for i in v.instances]
                      for n, v in deployment.variants.items()},
    }


def _reason(exc: ShipyardError) -> str:
    return exc.message[:1024]
