"""The control plane's face: create, describe, list and stop jobs; read their logs and metrics.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from shipyard.contract.archives import check_archive
from shipyard.control import (
    models,
    processing,
    records,
    recovery,
    training,
    transform,
    transform_data,
)
from shipyard.control.context import Context, runtime_for
from shipyard.control.endpoints import EndpointManager
from shipyard.control.invocation import InvokeDone, InvokeRequest, InvokeResult, InvokeStream
from shipyard.control.jobspec import source_uri_of_channel
from shipyard.control.logs import LogEvent
from shipyard.control.serving import primary_container
from shipyard.control.settings import Settings
from shipyard.control.staging import local_path_from_uri
from shipyard.control.supervisor import Supervisor
from shipyard.errors import ResourceInUse, ResourceNotFound, ShipyardError, ValidationError
from shipyard.runtimes.base import Runtime

log = logging.getLogger(__name__)

Launch = Literal["thread", "process"]
KINDS = {training.KIND: training, processing.KIND: processing,
         transform.KIND: transform_data}
#: How each kind's name reads in AWS's messages.
LABELS = {training.KIND: "Training", processing.KIND: "Processing", transform.KIND: "Transform"}


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
        self._runners: list[tuple[Supervisor | transform.TransformJob, threading.Thread]] = []
        #: Detached supervisors this plane started (their pids let tests kill one).
        self.processes: list[subprocess.Popen[bytes]] = []
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
        for runner, thread in list(self._runners):
            if runner.finishing.is_set():
                thread.join(max(0.0, deadline - time.monotonic()))
        left = [f"{runner.kind if isinstance(runner, Supervisor) else transform.KIND} job "
                f"{runner.name}: removing its containers"
                for runner, thread in self._runners if runner.finishing.is_set()
                and thread.is_alive()]
        left += self.endpoints.close(max(0.0, deadline - time.monotonic()))
        self.ctx.store.close()
        return left

    # -- create -----------------------------------------------------------------------------
    def create_training_job(self, request: dict[str, Any]) -> dict[str, str]:
        req = training.validate(request)
        self._confine(training.host_locations(req))
        self._preflight(req["AlgorithmSpecification"]["TrainingImage"],
                        [source_uri_of_channel(c)[0] for c in req.get("InputDataConfig") or []],
                        training.host_count(req))
        submit = training.submit_directory(req)
        if submit is not None and submit[0].startswith("file://"):
            code = local_path_from_uri(submit[0], self.ctx.file_roots)
            if code.is_file():
                check_archive(code, Path("/opt/ml/code"))
        return {"TrainingJobArn": self._create(training.KIND, req["TrainingJobName"], req)}

    def create_processing_job(self, request: dict[str, Any]) -> dict[str, str]:
        req = processing.validate(request)
        self._confine(processing.host_locations(req))
        self._preflight(req["AppSpecification"]["ImageUri"],
                        [i["S3Input"]["S3Uri"] for i in req.get("ProcessingInputs") or []],
                        processing.host_count(req))
        return {"ProcessingJobArn": self._create(processing.KIND, req["ProcessingJobName"], req)}

    def create_transform_job(self, request: dict[str, Any]) -> dict[str, str]:
        req = transform_data.validate(request)
        self._confine(transform_data.host_locations(req))
        # 'Could not find model "<arn>".', as AWS answers for a model that does not exist.
        model = self.describe_model(req["ModelName"])
        # Each instance is a serve container of its own: no multi-host network is needed.
        self._preflight(primary_container(model)["Image"],
                        [transform_data.input_source(req)[0]], 1)
        return {"TransformJobArn": self._create(transform.KIND, req["TransformJobName"], req)}

    def _confine(self, locations: list[tuple[str, str]]) -> None:
        """Refuse, before anything exists, a request naming a host path it may not use
        (``confinement``); supervisors check again where they read or write it."""
        roots = self.ctx.file_roots
        for member, uri in locations:
            roots.path(uri, member)

    def _preflight(self, image: str, sources: list[str], hosts: int) -> None:
        """Errors the user can fix, raised before anything is written or started."""
        if hosts > 1 and self.ctx.runtime.kind == "process":
            raise ValidationError("InstanceCount > 1 needs a container engine: the process "
                                  "runtime runs one host per job")
        for uri in sources:
            if not uri.startswith("s3://"):
                local_path_from_uri(uri, self.ctx.file_roots)
        self.ctx.runtime.check_image(image)

    def _create(self, kind: str, name: str, req: dict[str, Any]) -> str:
        settings = self.ctx.settings
        arn = records.job_arn(kind, name, settings.region, settings.account_id)
        record = KINDS[kind].new_record(req, arn, records.now())
        try:
            self.ctx.store.insert_job(kind, name, arn, records.IN_PROGRESS, record,
                                      {"phase": "created", "runtime": self.ctx.runtime.kind})
        except ResourceInUse:
            label = LABELS[kind]
            raise ResourceInUse(
                f"{label} job names must be unique within an AWS account and region, and a "
                f"{label.lower()} job with this name already exists ({arn})") from None
        self._launch(kind, name)
        return arn

    # -- supervisors ------------------------------------------------------------------------
    def _launch(self, kind: str, name: str) -> None:
        if self.launch == "thread":
            runner = (transform.TransformJob(self.ctx, name) if kind == transform.KIND
                      else Supervisor(self.ctx, kind, name))
            thread = threading.Thread(target=runner.run,
                                      name=f"supervisor-{kind}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
            self._runners.append((runner, thread))
            return
        log_dir = self.ctx.settings.data_dir / "supervisors"
        log_dir.mkdir(parents=True, exist_ok=True)
        overrides = self.ctx.settings.as_overrides()
        with open(log_dir / f"{kind}-{name}.log", "ab") as out:
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "shipyard.control.supervise", kind, name,
                 json.dumps(overrides)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                close_fds=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            ))

    def reconcile(self) -> list[tuple[str, str]]:
        """Give every active job without a live supervisor a new one; returns those jobs.

        A record that cannot be read or resumed is set aside as Failed (``recovery``): one
        bad row never keeps the plane from taking over the others."""
        recovery.sweep_unreadable(self.ctx)
        resumed = []
        for kind in KINDS:
            for row in self.ctx.store.list_jobs(kind, statuses=records.ACTIVE_STATUSES):
                try:
                    if not self.ctx.job_lock(kind, row.name).is_held_elsewhere():
                        self._launch(kind, row.name)
                        resumed.append((kind, row.name))
                except Exception as exc:
                    recovery.set_aside(self.ctx, kind, row.name, f"{type(exc).__name__}: {exc}")
        try:
            transform.sweep_finished(self.ctx)
        except ShipyardError as exc:
            log.warning("sweeping finished transform jobs: %s", exc)
        self.endpoints.reconcile()
        return resumed

    def join(self, timeout: float | None = None) -> None:
        """Wait for this plane's supervisor threads (tests and the foreground server)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    # -- describe / list / stop ------------------------------------------------------------
    def describe_training_job(self, name: str) -> dict[str, Any]:
        return self._describe(training.KIND, name)

    def describe_processing_job(self, name: str) -> dict[str, Any]:
        return self._describe(processing.KIND, name)

    def describe_transform_job(self, name: str) -> dict[str, Any]:
        return self._describe(transform.KIND, name)

    def _describe(self, kind: str, name: str) -> dict[str, Any]:
        try:
            return self.ctx.store.get_job(kind, name).record
        except ResourceNotFound:
            # What AWS really answers (the waiters and the SDK branch on it).
            raise ValidationError("Requested resource not found.") from None

    def list_jobs(self, kind: str, **filters: Any) -> list[dict[str, Any]]:
        rows = self.ctx.store.list_jobs(kind, **filters)
        return [r.record for r in rows]

    def stop_training_job(self, name: str) -> None:
        self.stop_job(training.KIND, name)

    def stop_processing_job(self, name: str) -> None:
        self.stop_job(processing.KIND, name)

    def stop_transform_job(self, name: str) -> None:
        self.stop_job(transform.KIND, name)

    def stop_job(self, kind: str, name: str) -> None:
        at = records.now()

        def stopping(rec: dict[str, Any], run: dict[str, Any]) -> str:
            status = records.status_of(kind, rec)
            if status == records.STOPPING:
                return status
            if status != records.IN_PROGRESS:
                label = LABELS[kind].lower()
                raise ValidationError(f"The request was rejected because the {label} job is in "
                                      f"status {status}.")
            if kind == training.KIND:
                records.transition(rec, "Stopping", "Stopping the training job", at)
            return records.set_status(kind, rec, records.STOPPING, at)

        try:
            self.ctx.store.mutate(kind, name, stopping)
        except ResourceNotFound:
            raise ValidationError("Requested resource not found.") from None
        self.ctx.store.request_stop(kind, name)
        if not self.ctx.job_lock(kind, name).is_held_elsewhere():
            self._launch(kind, name)

    # -- models, endpoint configs, endpoints -----------------------------------------------
    def create_model(self, request: dict[str, Any]) -> dict[str, str]:
        req = models.validate_model(request)
        self._confine(models.host_locations(req))
        for container in [req.get("PrimaryContainer"), *(req.get("Containers") or [])]:
            if isinstance(container, dict) and isinstance(container.get("Image"), str):
                self.ctx.runtime.check_reference(container["Image"])
        arn = self._insert_plain(models.MODEL_KIND, req["ModelName"], req, models.new_model,
                                 "model")
        return {"ModelArn": arn}

    def create_endpoint_config(self, request: dict[str, Any]) -> dict[str, str]:
        req = models.validate_endpoint_config(request)
        for variant in req["ProductionVariants"]:
            self.describe_model(variant["ModelName"])
        arn = self._insert_plain(models.CONFIG_KIND, req["EndpointConfigName"], req,
                                 models.new_endpoint_config, "endpoint configuration")
        return {"EndpointConfigArn": arn}

    def _insert_plain(self, kind: str, name: str, req: dict[str, Any], build: Any,
                      label: str) -> str:
        settings = self.ctx.settings
        arn = records.job_arn(kind, name, settings.region, settings.account_id)
        try:
            self.ctx.store.insert_job(kind, name, arn, models.CREATED,
                                      build(req, arn, records.now()), {})
        except ResourceInUse:
            raise ValidationError(f'Cannot create already existing {label} "{arn}".') from None
        return arn

    def describe_model(self, name: str) -> dict[str, Any]:
        return self._describe_plain(models.MODEL_KIND, name)

    def describe_endpoint_config(self, name: str) -> dict[str, Any]:
        return self._describe_plain(models.CONFIG_KIND, name)

    def _describe_plain(self, kind: str, name: str) -> dict[str, Any]:
        try:
            return self.ctx.store.get_job(kind, name).record
        except ResourceNotFound:
            settings = self.ctx.settings
            raise models.not_found(kind, records.job_arn(
                kind, name, settings.region, settings.account_id)) from None

    def delete_model(self, name: str) -> None:
        # Endpoints keep what they deployed: deleting the model does not touch them (AWS).
        self.describe_model(name)
        self.ctx.store.delete_job(models.MODEL_KIND, name)

    def delete_endpoint_config(self, name: str) -> None:
        self.describe_endpoint_config(name)
        self.ctx.store.delete_job(models.CONFIG_KIND, name)

    def create_endpoint(self, request: dict[str, Any]) -> dict[str, str]:
        return {"EndpointArn": self.endpoints.create(request)}

    def describe_endpoint(self, name: str) -> dict[str, Any]:
        return self.endpoints.describe(name)

    def update_endpoint(self, request: dict[str, Any]) -> dict[str, str]:
        return {"EndpointArn": self.endpoints.update(request)}

    def delete_endpoint(self, name: str) -> None:
        self.endpoints.delete(name)

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
            record = self.describe_endpoint(name)
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
