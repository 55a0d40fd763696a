"""Real-time endpoints: deployments of an endpoint config, blue/green updates, self-healing.

An endpoint's state lives in the store (its DescribeEndpoint document, and in the runner the
variant specs and container names of the deployment serving it), so a restarted control plane
reattaches to the containers still answering ``/ping`` and restarts the others. Routing to a
deployment once it is live is ``control.router``'s, which ``EndpointManager`` extends.

- Create: prepare each variant's model folder, start ``InitialInstanceCount`` containers per
  variant, wait for ``/ping``; InService, or Failed with the reason and nothing left running.
- Update (blue/green): the new config's fleet starts beside the old one; traffic moves in one
  step once every new instance is healthy; old instances leave the routing table, finish their
  in-flight requests (here and in the data plane: ``drains``), then get SIGTERM (SIGKILL 30 s
  later). A new fleet that fails is removed and the old one keeps serving (FailureReason says
  why).
- A monitor replaces any instance whose container exits; until then its variant's other
  instances take the traffic.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from shipyard.contract.labels import JOB_KIND_LABEL, JOB_NAME_LABEL
from shipyard.contract.serving import (
    SERVING_PORT,
    SERVING_STOP_GRACE_SECONDS,
)
from shipyard.control import capacity, recovery
from shipyard.control.context import Context
from shipyard.control.endpoints import models
from shipyard.control.endpoints.router import (
    IN_SERVICE,
    KIND,
    UPDATING,
    Deployment,
    Router,
    Variant,
    deployment_of,
    runner_of,
)
from shipyard.control.endpoints.serving import (
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
from shipyard.control.limits import check_instance_type
from shipyard.control.metrics.instances import endpoint_sampler, record_model_setup
from shipyard.control.metrics.utilization import UtilizationSampler
from shipyard.control.shapes import check_request
from shipyard.control.state import records
from shipyard.control.state.locks import JobLock
from shipyard.errors import (
    ResourceInUse,
    ResourceNotFound,
    ShipyardError,
    ValidationError,
)

log = logging.getLogger(__name__)

CREATING = "Creating"
DELETING = "Deleting"
FAILED = "Failed"
#: How often the monitor looks for dead containers.
MONITOR_INTERVAL_SECONDS = 0.5
#: Deployments an endpoint's update history keeps (its runner state's ``history``).
HISTORY_KEPT = 50
#: Containers of an endpoint recorded as dead (``_record_counts``): the last few.
DEAD_KEPT = 20
#: A deployment's outcome in that history: the new fleet serves, a new endpoint that could
#: not start, an update whose fleet failed (or died with the plane) while the old one served.
DEPLOYED = IN_SERVICE
DEPLOY_FAILED = FAILED
ROLLED_BACK = "RolledBack"


class EndpointManager(Router):
    """Deploys endpoints and routes to what it deployed (``Router``)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._replacing: set[str] = set()
        self._cancel: dict[str, threading.Event] = {}
        self._finishing: dict[threading.Thread, str] = {}
        #: Other routers of these endpoints (the data-plane process): a retiring fleet is
        #: stopped once each says it routes nothing to it any more (containers, timeout).
        self.drains: list[Callable[[list[str], float], None]] = []
        self._monitor: threading.Thread | None = None
        #: Live instances' utilization (``/aws/sagemaker/Endpoints``), from the first deploy.
        self._sampler: UtilizationSampler | None = None
        self._closed = threading.Event()
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

    def _set_status(self, name: str, status: str, *, event: dict[str, Any] | None = None,
                    **fields: Any) -> None:
        at = records.now()

        def change(rec: dict[str, Any], run: dict[str, Any]) -> str:
            rec.update({k: v for k, v in fields.items() if v is not None})
            for key in [k for k, v in fields.items() if v is None]:
                rec.pop(key, None)
            rec["EndpointStatus"] = status
            rec["LastModifiedTime"] = at
            if event is not None:
                _remember(run, event, at)
            return status
        self._mutate(name, change)

    def describe(self, name: str) -> dict[str, Any]:
        return self._get(KIND, name)

    # -- what the console shows -------------------------------------------------------------
    def history(self, name: str) -> list[dict[str, Any]]:
        """The endpoint's CreateEndpoint and UpdateEndpoint deployments, newest first: each
        one's ``Time`` (when it ended), ``Operation``, ``EndpointConfigName``, ``Outcome``
        (InService, Failed, RolledBack) and ``FailureReason``."""
        try:
            runner = self.ctx.store.get_job(KIND, name).runner
        except ResourceNotFound:
            raise models.not_found(KIND, self._arn(KIND, name)) from None
        return [dict(e) for e in reversed(runner.get("history") or [])]

    def routed(self, name: str) -> dict[str, list[str]]:
        """The containers this plane's routing table sends ``name``'s traffic to now, by
        variant (the instances that passed their health check and were not found dead
        since); empty when it routes nothing to ``name``."""
        with self._lock:
            deployment = self._live.get(name)
            if deployment is None:
                return {}
            return {v: [i.container for i in variant.instances]
                    for v, variant in deployment.variants.items()}

    # -- create / update / delete -----------------------------------------------------------
    def create(self, request: dict[str, Any]) -> str:
        req = check_request("CreateEndpoint", request)
        name, config_name = req["EndpointName"], req["EndpointConfigName"]
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
        req = check_request("UpdateEndpoint", request)
        name, config_name = req["EndpointName"], req["EndpointConfigName"]
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
            check_instance_type(self.ctx, specs[-1].instance_type)
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
            self._reserve(name, uid, specs, cancel)
            setup = time.monotonic()
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
                record_model_setup(self.ctx.settings, name, variant.spec.name,
                                   [time.monotonic() - setup] * len(variant.instances))
        except BaseException:
            for instance in deployment.instances():
                stop_instance(self.ctx, instance.container, 0)
            remove_tree(base)
            capacity.release(self.ctx, KIND, name, uid)
            raise
        finally:
            self._mutate(name, lambda rec, run: run.get("pending", []).remove(uid)
                         if uid in run.get("pending", []) else None)
        return deployment

    def _reserve(self, name: str, uid: str, specs: list[VariantSpec],
                 cancel: threading.Event) -> None:
        """Wait in the capacity queue (``control.capacity``) until the whole fleet's
        reservation is held; an update's fleet is fitted beside all but the fleet it
        replaces. While it waits the endpoint stays Creating (Updating), its
        ``StatusMessage`` saying what for; a delete ends the wait at once."""
        with self._lock:
            live = self._live.get(name)

        def waiting(message: str) -> None:
            def say(rec: dict[str, Any], run: dict[str, Any]) -> None:
                if message:
                    rec["StatusMessage"] = message
                else:
                    rec.pop("StatusMessage", None)
            self._mutate(name, say)

        if not capacity.reserve(self.ctx, KIND, name,
                                [(s.instance_type, s.count) for s in specs], unit=uid,
                                beside=None if live is None else live.uid,
                                cancelled=cancel.is_set, waiting=waiting):
            # Its record is being deleted (or is gone, and the name may be taken anew).
            raise ShipyardError(f"endpoint {name}: deleted while it waited for capacity")

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
            self._commit(name, done[0], event=_event("CreateEndpoint", config_name, DEPLOYED))

    def _deploy_update(self, name: str, config_name: str, specs: list[VariantSpec],
                       cancel: threading.Event) -> None:
        # The old fleet never stopped serving: a failed update is back to InService, saying why.
        done = self._run_deployment(name, config_name, specs, cancel, IN_SERVICE)
        if done is None:
            return
        deployment, old = done
        self._commit(name, deployment, FailureReason=None,
                     event=_event("UpdateEndpoint", config_name, DEPLOYED))
        if old is not None:
            self._retire(old)
            capacity.release(self.ctx, KIND, name, old.uid)

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
                created = status_on_failure == FAILED
                event = _event("CreateEndpoint" if created else "UpdateEndpoint", config_name,
                               DEPLOY_FAILED if created else ROLLED_BACK, reason)
                self._set_status(name, status_on_failure, FailureReason=reason, event=event)
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

    def _commit(self, name: str, deployment: Deployment, *,
                event: dict[str, Any] | None = None, **fields: Any) -> None:
        """Record ``deployment`` (already in the routing table) as what the endpoint runs;
        ``event``: the deployment that put it there, for the endpoint's history."""
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
            run.update(runner_of(deployment))
            if event is not None:
                _remember(run, event, at)
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

    def _tear_down(self, name: str, deployment: Deployment | None, forget: bool = True) -> None:
        if deployment is not None:
            self._retire(deployment)
            capacity.release(self.ctx, KIND, name, deployment.uid)
        # Whatever else carries the endpoint's labels (a deployment interrupted mid-way).
        for container in self.ctx.runtime.list({JOB_KIND_LABEL: KIND, JOB_NAME_LABEL: name}):
            stop_instance(self.ctx, container, SERVING_STOP_GRACE_SECONDS)
        if forget:
            capacity.release(self.ctx, KIND, name)
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
            if self._sampler is None and not self._closed.is_set():
                self._sampler = endpoint_sampler(self.ctx.runtime, self.ctx.settings,
                                                 self._live_instances)
                self._sampler.start()

    def _live_instances(self) -> dict[str, tuple[str, str]]:
        """Each serving instance's container -> (endpoint, variant)."""
        with self._lock:
            return {i.container: (name, v.spec.name) for name, d in self._live.items()
                    for v in d.variants.values() for i in v.instances}

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
        self._forget([dead], dead=True)
        with self._lock:
            if dead in variant.instances:
                variant.instances.remove(dead)
            if dead.container in self._replacing:
                return
            self._replacing.add(dead.container)
        log.warning("endpoint %s: instance %s exited; replacing it", name, dead.container)
        self._record_counts(name, deployment, dead=dead.container)

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
                    setup = time.monotonic()
                    instance = self._start(name, deployment.uid, variant)
                    try:
                        wait_healthy(self.ctx, [instance], variant.spec.startup_timeout)
                        instance = direct_route(self.ctx, instance)
                        record_model_setup(self.ctx.settings, name, variant.spec.name,
                                           [time.monotonic() - setup])
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

    def _record_counts(self, name: str, deployment: Deployment, dead: str = "") -> None:
        """The endpoint's instances as they are now; ``dead``: a container that left because
        it died, which a data plane of its own (``api.dataplane``) then treats as dead too
        (its requests in flight fail at once rather than at their timeout)."""
        def change(rec: dict[str, Any], run: dict[str, Any]) -> None:
            if run.get("uid") != deployment.uid:
                return
            rec["ProductionVariants"] = _variant_summaries(
                [v.spec for v in deployment.variants.values()], None, deployment)
            run.update(runner_of(deployment))
            if dead:
                run["dead"] = [*(run.get("dead") or [])[-(DEAD_KEPT - 1):], dead]
        self._mutate(name, change)

    # -- restart ----------------------------------------------------------------------------
    def reconcile(self) -> list[str]:
        """Take over endpoints after a restart: reattach healthy containers, restart the rest.
        Only one plane per data directory manages endpoints (the one holding the lock)."""
        if not self._ownership.acquire():
            return []
        try:
            sweep_reservations(self.ctx)
        except ShipyardError as exc:
            log.warning("sweeping the capacity ledger's endpoints: %s", exc)
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
                if state is not None and instance.host == state.published_host:
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
            reason = ("The control plane restarted during the update; the endpoint kept its "
                      "previous configuration. Call UpdateEndpoint again.")
            # Which configuration the update was for is not recorded: "".
            self._set_status(name, IN_SERVICE, FailureReason=reason,
                             event=_event("UpdateEndpoint", "", ROLLED_BACK, reason))
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
        self.invocation_metrics.close()
        with self._lock:
            sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.stop()
        return left

def sweep_reservations(ctx: Context) -> None:
    """After a restart: keep the capacity entries of the fleets that serve (re-counted from
    the records when the ledger lacks them) and of endpoints still being created (their
    restarted deployment takes its entry over, place in the queue included); forget the
    rest (an update's fleet died with the old plane; a failed or deleted endpoint)."""
    totals = capacity.totals_for(ctx)
    if totals is None:
        return
    rows = {row.name: row for row in ctx.store.list_jobs(KIND, limit=100_000)}

    def keep(entry: capacity.Entry) -> bool:
        row = rows.get(entry.owner) if entry.kind == KIND else None
        if entry.kind != KIND:
            return True
        if row is None:
            return False
        if row.status == CREATING:
            return True
        return row.status in (IN_SERVICE, UPDATING) and entry.unit == row.runner.get("uid")

    ctx.capacity.sweep(keep)
    for row in rows.values():
        if row.status in (IN_SERVICE, UPDATING) and row.runner.get("uid"):
            specs = [VariantSpec.from_json(s) for s in row.runner.get("specs") or []]
            ctx.capacity.hold(KIND, row.name, str(row.runner["uid"]), capacity.demand_of(
                [(s.instance_type, s.count) for s in specs], totals,
                ctx.settings.cpu_overcommit))


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


def _reason(exc: ShipyardError) -> str:
    return exc.message[:1024]


def _event(operation: str, config_name: str, outcome: str, reason: str = ""
           ) -> dict[str, Any]:
    """One entry of an endpoint's update history (``EndpointManager.history``)."""
    return {"Operation": operation, "EndpointConfigName": config_name, "Outcome": outcome,
            "FailureReason": reason}


def _remember(run: dict[str, Any], event: dict[str, Any], at: float) -> None:
    """Append ``event`` to the runner state's history, in the transaction that records its
    outcome; the oldest entries beyond ``HISTORY_KEPT`` are dropped."""
    history = run.setdefault("history", [])
    history.append({"Time": at, **event})
    del history[:-HISTORY_KEPT]
