"""The control plane's one door: create, describe, list, stop and delete any kind
(``shipyard.kinds``), tags, logs and metrics. The API, the CLI's server and the tests come in
here and nowhere else (docs/control.md).

Create validates the whole request, checks that the image and local data exist, persists the
job and returns at once (as SageMaker does); a supervisor then drives it. Supervisors run
either as threads of this process (the server, tests) or as detached processes (the CLI, so a
job keeps running after the command that started it exits). On start, the plane reconciles:
every active job without a live supervisor gets one, which resumes from the recorded phase
against what the runtime really has.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from shipyard import kinds
from shipyard.control import capacity, recovery, registry, shapes
from shipyard.control.context import Context, runtime_for
from shipyard.control.endpoints import models
from shipyard.control.endpoints.deployments import EndpointManager
from shipyard.control.endpoints.invocation import (
    InvokeDone,
    InvokeRequest,
    InvokeResult,
    InvokeStream,
)
from shipyard.control.jobs.accept import accept, confine
from shipyard.control.jobs.kind import JobKind, Runner
from shipyard.control.jobs.registry import JOB_KINDS
from shipyard.control.metrics import Metrics
from shipyard.control.search import SearchIndex, SearchPage, search
from shipyard.control.state import records
from shipyard.control.state.log_reader import HostLog
from shipyard.control.state.logs import LogEvent
from shipyard.control.transform.job import sweep_finished
from shipyard.control.tuning import trials
from shipyard.errors import ResourceInUse, ResourceNotFound, ShipyardError, ValidationError
from shipyard.runtimes.base import Runtime
from shipyard.settings import Settings

log = logging.getLogger(__name__)

Launch = Literal["thread", "process"]
#: The SageMaker operations whose request the plane checks whole at its door (botocore's
#: model, then what the model cannot say): the API leaves them to it rather than check twice.
CHECKED_AT_DOOR = frozenset({k.operation("Create") for k in kinds.ALL}
                            | {"UpdateEndpoint", "UpdateModelPackage"})
#: The model registry's kinds: rows keyed by the lower-cased name their ARN ends with.
_REGISTRY = (kinds.MODEL_PACKAGE_GROUP, kinds.MODEL_PACKAGE)


class ControlPlane:
    def __init__(
        self,
        settings: Settings,
        runtime: Runtime | None = None,
        *,
        launch: Launch = "thread",
        reconcile: bool = True,
    ) -> None:
        if runtime is None:
            runtime = runtime_for(settings)
        self.ctx = Context.build(settings, runtime)
        self.endpoints = EndpointManager(self.ctx)
        self.launch = launch
        self._threads: list[threading.Thread] = []
        self._runners: list[tuple[str, Runner, threading.Thread]] = []
        #: Detached supervisors this plane started (their pids let tests kill one).
        self.processes: list[subprocess.Popen[bytes]] = []
        #: Search's column cache of the records (``control/search``).
        self.search_index = SearchIndex(self.ctx.store.path)
        self._metrics: Metrics | None = None
        self._metrics_lock = threading.Lock()
        if reconcile:
            self.reconcile()

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    def close(self, timeout: float = 0.0) -> list[str]:
        """Release the plane. Work that removes containers (a job's cleanup, an endpoint's
        deletion) gets up to ``timeout`` seconds to finish; returns what it left unfinished,
        which the next plane on this data directory finishes. Running jobs and InService
        endpoints are left running on purpose: the next plane reattaches them."""
        deadline = time.monotonic() + timeout
        for _, runner, thread in list(self._runners):
            if runner.finishing.is_set():
                thread.join(max(0.0, deadline - time.monotonic()))
        left = [f"{kind} job {runner.name}: removing its containers"
                for kind, runner, thread in self._runners if runner.finishing.is_set()
                and thread.is_alive()]
        left += self.endpoints.close(max(0.0, deadline - time.monotonic()))
        self.search_index.close()
        # Jobs queued for MLflow get a few seconds, however short ``timeout``; then dropped.
        self.ctx.close_forwarder(max(2.0, deadline - time.monotonic()))
        self.ctx.store.close()
        if self._metrics is not None:
            self._metrics.close()
        return left

    # -- the door: every kind through the same few calls -----------------------------------
    def create(self, kind: str, request: dict[str, Any], *,
               caller: dict[str, Any] | None = None) -> dict[str, str]:
        """Create a resource from its SageMaker request; answers ``{<Resource>Arn: arn}``.
        ``caller``: the UserContext the model registry records as ``CreatedBy``."""
        spec = kinds.get(kind)
        tags: list[dict[str, str]] = []
        # Anything but an object is refused by the kind's own check, in AWS's words.
        if isinstance(request, dict):
            if request.get("Tags") is not None:
                # Checked before they are taken off: the kind's own check sees the rest.
                shapes.validate("sagemaker", spec.operation("Create"), request,
                                only=("Tags",))
            request = dict(request)
            tags = request.pop("Tags", None) or []
        if spec.key in JOB_KINDS:
            arn = self._create_job(JOB_KINDS[spec.key], request)
        elif spec is kinds.ENDPOINT:
            arn = self.endpoints.create(request)
        elif spec is kinds.MODEL_PACKAGE_GROUP:
            arn = registry.groups.create(self.ctx, request, caller or {})
        elif spec is kinds.MODEL_PACKAGE:
            arn = registry.packages.create(self.ctx, request, caller or {}, self._find_training)
        else:
            arn = self._create_definition(spec, request)
        if tags:
            self.ctx.store.add_tags(arn, {t["Key"]: t.get("Value", "") for t in tags})
        return {spec.arn_field: arn}

    def describe(self, kind: str, name: str) -> dict[str, Any]:
        spec = kinds.get(kind)
        if spec is kinds.ENDPOINT:
            return self.endpoints.describe(name)
        if spec is kinds.MODEL_PACKAGE_GROUP:
            return registry.groups.describe(self.ctx, name)
        if spec is kinds.MODEL_PACKAGE:
            return registry.packages.describe(self.ctx, name)
        try:
            return self.ctx.store.get_job(spec.key, name).record
        except ResourceNotFound:
            if spec.is_job:
                # What AWS really answers (the waiters and the SDK branch on it).
                raise ValidationError("Requested resource not found.") from None
            settings = self.ctx.settings
            raise models.not_found(spec.key, spec.arn(name, settings.region,
                                                      settings.account_id)) from None

    def lookup(self, kind: str, name: str) -> dict[str, Any] | None:
        """The stored record, or None: for readers that treat "missing" as an answer."""
        if kinds.get(kind) in _REGISTRY:
            try:
                return self.describe(kind, name)
            except ValidationError:
                return None
        try:
            return self.ctx.store.get_job(kinds.get(kind).key, name).record
        except ResourceNotFound:
            return None

    def list_resources(self, kind: str, **filters: Any) -> list[dict[str, Any]]:
        """Records of one kind; ``filters`` as :meth:`Store.list_jobs` takes them (model
        packages: as ``registry.packages.listing`` does, unpaged)."""
        spec = kinds.get(kind)
        if spec is kinds.MODEL_PACKAGE_GROUP:
            return registry.groups.listing(self.ctx, **filters)
        if spec is kinds.MODEL_PACKAGE:
            return registry.packages.listing(self.ctx, **filters)
        return [r.record for r in self.ctx.store.list_jobs(kinds.get(kind).key, **filters)]

    def stop(self, kind: str, name: str) -> None:
        spec = kinds.get(kind)
        if not spec.stoppable:
            raise ValidationError(f"A {spec.label} cannot be stopped")
        self._stop_job(spec, name)

    def delete(self, kind: str, name: str) -> None:
        spec = kinds.get(kind)
        if spec is kinds.ENDPOINT:
            self.endpoints.delete(name)
            return
        if not spec.deletable:
            raise ValidationError(f"A {spec.label} cannot be deleted")
        if spec is kinds.MODEL_PACKAGE_GROUP:
            registry.groups.delete(self.ctx, name)
            return
        if spec is kinds.MODEL_PACKAGE:
            registry.packages.delete(self.ctx, name)
            return
        # Endpoints keep what they deployed: deleting a model or a configuration does not
        # touch them (AWS).
        self.describe(spec.key, name)
        self.ctx.store.delete_job(spec.key, name)

    def update_endpoint(self, request: dict[str, Any]) -> dict[str, str]:
        return {"EndpointArn": self.endpoints.update(request)}

    # -- model registry and Search (docs/registry.md) ---------------------------------------
    def update_model_package(self, request: dict[str, Any], *,
                             caller: dict[str, Any] | None = None) -> dict[str, str]:
        """UpdateModelPackage: approval, metadata...; ``caller`` is recorded as
        ``LastModifiedBy``."""
        return {"ModelPackageArn": registry.packages.update(self.ctx, request, caller or {})}

    def search(self, request: dict[str, Any], offset: int = 0, limit: int = 10) -> SearchPage:
        """A Search request's records ``offset`` to ``offset + limit``, and how many match."""
        return search(self.search_index, request, offset, limit)

    def _find_training(self, field: str, test: Callable[[Any], bool]) -> str | None:
        """The ARN of a training job whose ``field`` passes ``test`` (a package's lineage)."""
        name = self.search_index.first(kinds.TRAINING.key, "TrainingJob", field, test)
        found = None if name is None else self.lookup(kinds.TRAINING.key, name)
        return None if found is None else str(found["TrainingJobArn"])

    # -- tags -------------------------------------------------------------------------------
    def tuning_trials(self, name: str) -> list[dict[str, Any]]:
        """The trials of a tuning job, as ListTrainingJobsForHyperParameterTuningJob shows
        each (unsorted)."""
        self.describe(kinds.TUNING.key, name)
        return trials.summaries(self.ctx, name)

    def add_tags(self, arn: str, tags: dict[str, str]) -> None:
        self._check_resource(arn)
        self.ctx.store.add_tags(arn, tags)

    def list_tags(self, arn: str) -> list[tuple[str, str]]:
        self._check_resource(arn)
        return self.ctx.store.list_tags(arn)

    def delete_tags(self, arn: str, keys: list[str]) -> None:
        self._check_resource(arn)
        self.ctx.store.delete_tags(arn, keys)

    def _check_resource(self, arn: str) -> None:
        if not self.ctx.store.arn_exists(arn):
            raise ValidationError(f"Resource {arn} does not exist.")

    # -- creating ---------------------------------------------------------------------------
    def _create_job(self, job: JobKind, request: dict[str, Any]) -> str:
        name, arn = accept(self.ctx, job, request, self.describe)
        self._launch(job.kind.key, name)
        return arn

    def _create_definition(self, spec: kinds.Kind, request: dict[str, Any]) -> str:
        """A model or an endpoint configuration: a record, nothing to run."""
        if spec is kinds.MODEL:
            req = models.validate_model(
                request, resolve=lambda checked: registry.resolve_model(self.ctx, checked))
            confine(self.ctx, models.host_locations(req))
            for container in [req.get("PrimaryContainer"), *(req.get("Containers") or [])]:
                if isinstance(container, dict) and isinstance(container.get("Image"), str):
                    self.ctx.runtime.check_reference(container["Image"])
            build = models.new_model
        else:
            req = models.validate_endpoint_config(request)
            for variant in req["ProductionVariants"]:
                self.describe(kinds.MODEL.key, variant["ModelName"])
            build = models.new_endpoint_config
        name = req[spec.name_field]
        settings = self.ctx.settings
        arn = spec.arn(name, settings.region, settings.account_id)
        try:
            self.ctx.store.insert_job(spec.key, name, arn, models.CREATED,
                                      build(req, arn, records.now()), {})
        except ResourceInUse:
            raise ValidationError(
                f'Cannot create already existing {spec.label} "{arn}".') from None
        return arn

    # -- supervisors ------------------------------------------------------------------------
    def _launch(self, kind: str, name: str) -> None:
        if self.launch == "thread":
            runner = JOB_KINDS[kind].runner(self.ctx, name)
            thread = threading.Thread(target=runner.run,
                                      name=f"supervisor-{kind}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
            self._runners.append((kind, runner, thread))
            return
        log_dir = self.ctx.settings.data_dir / "supervisors"
        log_dir.mkdir(parents=True, exist_ok=True)
        overrides = self.ctx.settings.as_overrides()
        with open(log_dir / f"{kind}-{name}.log", "ab") as out:
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "shipyard.control.jobs.supervise", kind, name,
                 json.dumps(overrides)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                close_fds=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            ))

    def reconcile(self) -> list[tuple[str, str]]:
        """Give every active job without a live supervisor a new one; returns those jobs.

        A record that cannot be read or resumed is set aside as Failed (``recovery``): one
        bad row never keeps the plane from taking over the others."""
        recovery.sweep_unreadable(self.ctx)
        try:
            capacity.sweep_jobs(self.ctx, JOB_KINDS)
        except ShipyardError as exc:
            log.warning("sweeping the capacity ledger: %s", exc)
        resumed = []
        for kind in JOB_KINDS:
            for row in self.ctx.store.list_jobs(kind, statuses=records.ACTIVE_STATUSES):
                try:
                    if not self.ctx.job_lock(kind, row.name).is_held_elsewhere():
                        self._launch(kind, row.name)
                        resumed.append((kind, row.name))
                except Exception as exc:
                    recovery.set_aside(self.ctx, kind, row.name, f"{type(exc).__name__}: {exc}")
        try:
            sweep_finished(self.ctx)
        except ShipyardError as exc:
            log.warning("sweeping finished transform jobs: %s", exc)
        self.endpoints.reconcile()
        return resumed

    def join(self, timeout: float | None = None) -> None:
        """Wait for this plane's supervisor threads (tests and the foreground server)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # -- stopping -------------------------------------------------------------------------
    def _stop_job(self, spec: kinds.Kind, name: str) -> None:
        kind = spec.key
        at = records.now()
        job = JOB_KINDS[kind]

        def stopping(rec: dict[str, Any], run: dict[str, Any]) -> str:
            status = records.status_of(kind, rec)
            if status == records.STOPPING:
                return status
            if status != records.IN_PROGRESS:
                raise ValidationError(f"The request was rejected because the {spec.label} is in "
                                      f"status {status}.")
            job.transition(rec, "Stopping", f"Stopping the {spec.label}", at)
            return records.set_status(kind, rec, records.STOPPING, at)

        try:
            self.ctx.store.mutate(kind, name, stopping)
        except ResourceNotFound:
            raise ValidationError("Requested resource not found.") from None
        self.ctx.store.request_stop(kind, name)
        if not self.ctx.job_lock(kind, name).is_held_elsewhere():
            self._launch(kind, name)

    # -- endpoints --------------------------------------------------------------------------
    def add_drain(self, drain: Callable[[list[str], float], None]) -> None:
        """``drain(containers, timeout)`` runs, with the plane's own, before containers that
        leave an endpoint are stopped: another process routing to them finishes its requests
        (the data plane)."""
        self.endpoints.drains.append(drain)

    async def invoke(self, request: InvokeRequest) -> InvokeResult:
        return await self.endpoints.invoke(request)

    def invoke_soon(self, request: InvokeRequest, done: InvokeDone) -> None:
        """Start an invocation from the event loop; ``done`` gets its outcome, once."""
        self.endpoints.invoke_soon(request, done)

    async def invoke_stream(self, request: InvokeRequest) -> InvokeStream:
        return await self.endpoints.invoke_stream(request)

    def wait_endpoint(self, name: str, timeout: float | None = None,
                      poll: float = 0.05) -> dict[str, Any]:
        """Block while the endpoint is Creating, Updating or Deleting; returns its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.endpoints.describe(name)
            if record["EndpointStatus"] not in ("Creating", "Updating", "Deleting"):
                return record
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"endpoint {name} still {record['EndpointStatus']} after "
                                   f"{timeout} s")
            time.sleep(poll)

    # -- logs and metrics -------------------------------------------------------------------
    def log_hosts(self, kind: str, name: str) -> list[str]:
        self.ctx.store.get_job(kind, name)
        return self.ctx.logs.hosts(kind, name)

    def host_logs(self, kind: str, name: str) -> list[HostLog]:
        """Each host's stored log of a job or endpoint (none before a host has logged)."""
        logs = self.ctx.logs
        return [logs.host_log(kind, name, host) for host in logs.hosts(kind, name)]

    def host_log(self, kind: str, name: str, host: str) -> HostLog | None:
        """One host's log, or None if it has none."""
        # Membership, not a path built from the caller's text: "../x" never reaches disk.
        if host not in self.ctx.logs.hosts(kind, name):
            return None
        return self.ctx.logs.host_log(kind, name, host)

    def follow_logs(self, kind: str, name: str, *, follow: bool = True,
                    poll: float = 0.2) -> Iterator[LogEvent]:
        """Every host's log lines as they arrive; ends when the job has ended (or at once)."""
        offsets: dict[str, int] = {}
        while True:
            done = self.ctx.store.get_job(kind, name).status in records.TERMINAL_STATUSES
            got = False
            for host in self.ctx.logs.hosts(kind, name):
                events, offsets[host] = self.ctx.logs.read(kind, name, host, offsets.get(host, 0))
                for event in events:
                    got = True
                    yield event
            if done or not follow:
                return
            if not got:
                time.sleep(poll)

    # -- CloudWatch metrics: CloudWatch's requests and answers (docs/metrics.md) -------------
    @property
    def metrics(self) -> Metrics:
        """Published metrics and jobs' series (``control.metrics``), opened on first use."""
        with self._metrics_lock:
            if self._metrics is None:
                self._metrics = Metrics.open(self.ctx.settings, self.ctx.store.path)
            return self._metrics

    def put_metric_data(self, request: dict[str, Any]) -> None:
        self.metrics.put_metric_data(request)

    def get_metric_statistics(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.metrics.get_metric_statistics(request)

    def get_metric_data(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.metrics.get_metric_data(request)

    def list_metrics(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.metrics.list_metrics(request)

    def metric_series(self, kind: str, name: str, metric: str | None = None
                      ) -> list[dict[str, Any]]:
        self.ctx.store.get_job(kind, name)
        return [{"MetricName": m, "Timestamp": ts, "Value": v, "Host": h}
                for m, ts, v, h in self.ctx.store.metric_series(kind, name, metric)]

    def wait(self, kind: str, name: str, timeout: float | None = None,
             poll: float = 0.1) -> dict[str, Any]:
        """Block until the job reaches a terminal status; returns its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            row = self.ctx.store.get_job(kind, name)
            if row.status in records.TERMINAL_STATUSES:
                return row.record
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{kind} job {name} still {row.status} after {timeout} s")
            time.sleep(poll)
