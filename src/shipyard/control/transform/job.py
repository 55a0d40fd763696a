"""Transform jobs: one job driven from its input objects to their ``.out`` files.

What SageMaker does for CreateTransformJob (platform-api.md 3.7, 1.6), and how:

1. The model's container starts ``TransformResources.InstanceCount`` times with ``serve``
   (``control.serving``), with the model's environment, then ``SAGEMAKER_BATCH*`` and the
   job's ``Environment``; while they start, the input (``s3://``, ``file://`` or a path;
   ``S3Prefix`` or ``ManifestFile``) is staged as a training channel is.
2. Once every instance answers ``/ping``, ``GET /execution-parameters`` on the first one
   fills BatchStrategy, MaxPayloadInMB and MaxConcurrentTransforms the request left unset;
   DescribeTransformJob then shows the values the job runs with.
3. Every input object, in path order, becomes request payloads (``transform_data``); each
   instance gets ``MaxConcurrentTransforms`` keep-alive connections, and every connection
   takes the next payload of any object. A payload is retried ``InvocationsMaxRetries`` times
   when the container does not answer within ``InvocationsTimeoutInSeconds``, drops the
   connection or answers 5xx; a 4xx is the model's verdict and is not retried.
4. An object's answers, joined and filtered, are assembled into ``<object path>.out`` below
   ``S3OutputPath``, written whole (a temporary name renamed into place, or one S3 upload):
   "partial objects are not uploaded".
5. The first object that fails fails the job ("If any object fails ... marks the job as
   failed"): ``FailureReason`` names the object, the request and the container's status and
   message. Objects already written stay written.

StopTransformJob (the plane marks the job ``Stopping`` and requests a stop) is seen within
``STOP_POLL_SECONDS``: no new request is sent, requests in flight finish, containers are
stopped, the job ends ``Stopped``. Containers are stopped at the end of every job. A driver
that died is replaced by the plane's reconcile; the new one starts the job over (outputs are
written whole, so writing them again is harmless).

Logs: each instance's output goes to the job's log stream ``algo-<N>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import logging
import os
import queue
import shutil
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard import contract, kinds
from shipyard.contract.labels import JOB_KIND_LABEL, JOB_NAME_LABEL
from shipyard.contract.serving import EXECUTION_PARAMETERS_PATH, INVOCATIONS_PATH
from shipyard.control import capacity, staging
from shipyard.control.context import Context
from shipyard.control.endpoints import models
from shipyard.control.endpoints.serving import (
    Instance,
    VariantSpec,
    follow_logs,
    prepare_model_dir,
    primary_container,
    remove_owner_network,
    start_instance,
    stop_instance,
    wait_healthy,
)
from shipyard.control.metrics.instances import transform_sampler
from shipyard.control.metrics.utilization import UtilizationSampler
from shipyard.control.s3 import iter_regular_files, parse_s3_uri
from shipyard.control.state import records
from shipyard.control.state.logs import await_followers
from shipyard.control.transform.data import (
    ObjectWork,
    TransformParameters,
    TransformPlan,
    container_environment,
    output_name,
    resolve_parameters,
)
from shipyard.control.transform.request import input_source
from shipyard.errors import (
    DataSourceError,
    ModelError,
    ResourceNotFound,
    ShipyardError,
    StorageError,
    ValidationError,
)

log = logging.getLogger(__name__)

KIND = kinds.TRANSFORM.key
#: How often the driver looks for a StopTransformJob.
STOP_POLL_SECONDS = 0.1
#: SIGTERM-to-SIGKILL grace for the job's containers. Shorter than an endpoint's 30 s: when
#: they are stopped no request of the job is waiting on them any more.
STOP_GRACE_SECONDS = 5.0
#: MaxConcurrentTransforms may come from a container's ``/execution-parameters`` (Shipyard's
#: toolkit answers its worker count): connections per instance are capped here.
MAX_CONNECTIONS_PER_INSTANCE = 64
#: Pause before retrying a failed request, times the attempt number.
RETRY_BACKOFF_SECONDS = 0.2
#: Characters of a container's error answer kept in FailureReason.
MESSAGE_CHARS = 400
#: How long ``GET /execution-parameters`` may take.
EXECUTION_PARAMETERS_TIMEOUT_S = 10.0
_LOCAL = "127.0.0.1"


class TransformJob:
    """Drives one transform job to a terminal status (the plane runs one per job)."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self._stop = threading.Event()
        self._done = threading.Event()
        #: Set while the outcome is recorded and containers stopped (see Supervisor).
        self.finishing = threading.Event()
        #: Each container's log follower, by log stream (host).
        self._followers: dict[str, threading.Thread] = {}
        #: The hosts' utilization (``/aws/sagemaker/TransformJobs``) while they run.
        self._sampler: UtilizationSampler | None = None

    def run(self) -> bool:
        """Drive the job to the end; False if another driver holds it."""
        lock = self.ctx.job_lock(KIND, self.name)
        if not lock.acquire():
            return False
        try:
            row = self.ctx.store.get_job(KIND, self.name)
            if row.status in records.TERMINAL_STATUSES:
                return True
            watcher = threading.Thread(target=self._watch_stop, daemon=True,
                                       name=f"transform-stop-{self.name}")
            watcher.start()
            instances: list[Instance] = []
            job_dir: Path | None = None
            try:
                if row.runner.get("job_dir"):
                    # What a driver that died left behind: this run starts over.
                    shutil.rmtree(row.runner["job_dir"], ignore_errors=True)
                job_dir = self._job_dir()
                status, reason = self._drive(row.record, job_dir, instances)
            except ShipyardError as exc:
                status, reason = records.FAILED, str(exc)
            except Exception as exc:
                log.error("transform job %s crashed:\n%s", self.name, traceback.format_exc())
                status, reason = (records.FAILED,
                                  f"InternalServerError: {type(exc).__name__}: {exc}")
            except BaseException:
                self._done.set()
                self._clean_up(instances, job_dir)
                raise
            self._done.set()
            if self._stop.is_set() and status != records.COMPLETED:
                status, reason = records.STOPPED, None
            try:
                # The outcome is known and the outputs are written; the status waits for the
                # containers to exit (SIGTERM, exit: ~0.2 s) and every line they printed to be
                # stored, as SDK clients stop reading the log at it. Removal follows, while the
                # lock is still held, so the job is cleaned up by the time run() returns.
                self.finishing.set()
                self._end_instances(instances)
                self._complete(status, reason)
            finally:
                self._clean_up(instances, job_dir)
            return True
        finally:
            lock.release()

    def _clean_up(self, instances: list[Instance], job_dir: Path | None) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        self._stop_instances(instances)
        capacity.release(self.ctx, KIND, self.name)
        remove_owner_network(self.ctx, KIND, self.name)
        if job_dir is not None:
            shutil.rmtree(job_dir, ignore_errors=True)
        with contextlib.suppress(ShipyardError):
            self.ctx.store.mutate(KIND, self.name, lambda rec, run: run.update(cleaned=True))

    # -- the steps ---------------------------------------------------------------------------
    def _job_dir(self) -> Path:
        """A fresh working folder, ``<data>/jobs/transform/<name>-<uid>``."""
        uid = uuid.uuid4().hex[:8]
        for leftover in self.ctx.runtime.list({JOB_KIND_LABEL: KIND, JOB_NAME_LABEL: self.name}):
            stop_instance(self.ctx, leftover, 0)
        job_dir = self.ctx.job_dir(KIND, self.name, uid)
        job_dir.mkdir(parents=True)
        self.ctx.store.mutate(KIND, self.name, lambda rec, run: run.update(
            uid=uid, job_dir=str(job_dir), phase="running"))
        return job_dir

    def _drive(self, record: dict[str, Any], job_dir: Path, instances: list[Instance]
               ) -> tuple[str, str | None]:
        spec = self._spec(record)
        if not capacity.reserve(self.ctx, KIND, self.name, [(spec.instance_type, spec.count)],
                                cancelled=self._stop.is_set, waiting=self._waiting):
            return records.STOPPED, None
        model_dir = prepare_model_dir(self.ctx, spec.model_data_url, job_dir / "model")
        if self._stop.is_set():
            return records.STOPPED, None
        env = container_environment(record)
        uid = job_dir.name.rsplit("-", 1)[-1]  # the deployment label of its containers
        for host in contract.host_names(spec.count):
            instance = start_instance(self.ctx, owner_kind=KIND, owner_name=self.name,
                                      deployment=uid, spec=spec, model_dir=model_dir,
                                      workdir=job_dir / "instances", extra_env=env)
            # Log streams are named by host, as training's are (``<job>/algo-1-<epoch>``).
            instance = dataclasses.replace(instance, log_stream=host)
            instances.append(instance)
            self._followers[host] = follow_logs(self.ctx, KIND, self.name, instance)
        self._sampler = transform_sampler(self.ctx.runtime, self.ctx.settings, self.name,
                                          {i.log_stream: i.container for i in instances},
                                          job_dir)
        self._sampler.start()
        objects = self._stage(record, job_dir / "staging")
        wait_healthy(self.ctx, instances, spec.startup_timeout, self._stop)
        if self._stop.is_set():
            return records.STOPPED, None
        parameters = resolve_parameters(record, _execution_parameters(instances[0]))
        started = records.now()

        def mark_started(rec: dict[str, Any], run: dict[str, Any]) -> None:
            rec["TransformStartTime"] = started
            rec["LastModifiedTime"] = started
            rec["BatchStrategy"] = parameters.batch_strategy
            rec["MaxPayloadInMB"] = parameters.max_payload_in_mb
            rec["MaxConcurrentTransforms"] = parameters.max_concurrent_transforms
            run["parameter_sources"] = parameters.sources

        self.ctx.store.mutate(KIND, self.name, mark_started)
        dispatcher = _Dispatcher(
            instances, parameters, _headers(record), self._stop,
            lambda rel, data: self._deliver(record, rel, data, job_dir / "outputs"))
        failure = dispatcher.run(objects, TransformPlan.from_record(record, parameters))
        if failure is not None:
            return records.FAILED, failure
        return records.COMPLETED, None

    def _waiting(self, message: str) -> None:
        """While it waits for capacity: InProgress, with a StatusMessage saying for what."""
        def say(rec: dict[str, Any], run: dict[str, Any]) -> None:
            if message:
                rec["StatusMessage"] = message
            else:
                rec.pop("StatusMessage", None)
        self.ctx.store.mutate(KIND, self.name, say)

    def _spec(self, record: dict[str, Any]) -> VariantSpec:
        try:
            model = self.ctx.store.get_job(models.MODEL_KIND, record["ModelName"]).record
        except ResourceNotFound:
            settings = self.ctx.settings
            raise models.not_found(models.MODEL_KIND, records.job_arn(
                models.MODEL_KIND, record["ModelName"], settings.region,
                settings.account_id)) from None
        container = primary_container(model)
        if container.get("Mode") == "MultiModel":
            raise ValidationError(f"Model {record['ModelName']} is a MultiModel container;"
                                  " transform jobs run a SingleModel container")
        resources = record["TransformResources"]
        return VariantSpec(
            name=KIND, image=container["Image"],
            instance_type=resources.get("InstanceType") or "local",
            count=int(resources.get("InstanceCount") or 1), weight=1.0,
            env=dict(container.get("Environment") or {}), model_name=record["ModelName"],
            model_data_url=container.get("ModelDataUrl"),
            startup_timeout=float(self.ctx.settings.endpoint_startup_timeout_seconds))

    def _stage(self, record: dict[str, Any], staging_dir: Path) -> list[tuple[str, Path]]:
        """Every input object as ``(path below the input prefix, local file)``, sorted."""
        uri, data_type = input_source(record)
        # The S3 client is built lazily: a local input never touches it.
        staged = staging.stage_input(uri, data_type, "FullyReplicated", ["algo-1"],
                                     staging_dir, self.ctx.s3, roots=self.ctx.file_roots)
        return list(iter_regular_files(staged["algo-1"].host_path))

    def _deliver(self, record: dict[str, Any], rel: str, data: bytes, scratch: Path) -> None:
        """Write one ``.out`` whole below ``S3OutputPath``."""
        base = record["TransformOutput"]["S3OutputPath"]
        name = output_name(rel)
        try:
            if base.startswith("s3://"):
                temp = scratch / f"{uuid.uuid4().hex}.out"
                temp.parent.mkdir(parents=True, exist_ok=True)
                temp.write_bytes(data)
                try:
                    self.ctx.s3.upload_file(temp, parse_s3_uri(base).child(name).uri)
                finally:
                    temp.unlink(missing_ok=True)
                return
            # Checked for every object: the folder may have been made a link meanwhile.
            dest = self.ctx.file_roots.path(base, "TransformOutput.S3OutputPath") / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
            try:
                partial.write_bytes(data)
                os.replace(partial, dest)
            finally:
                partial.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot write {name} below {base}: {exc.strerror or exc}"
                               ) from exc

    # -- stop and the end --------------------------------------------------------------------
    def _watch_stop(self) -> None:
        while not self._done.wait(STOP_POLL_SECONDS):
            try:
                if self.ctx.store.stop_requested(KIND, self.name):
                    self._stop.set()
                    return
            except ShipyardError as exc:
                log.warning("transform job %s: cannot read stop requests: %s", self.name, exc)

    def _end_instances(self, instances: list[Instance]) -> None:
        """Stop the containers without removing them, then wait for their logs: removing a
        container ends its log stream, delivered or not."""
        def end(container: str) -> None:
            try:
                self.ctx.runtime.signal(container, signal.SIGTERM)
                if self.ctx.runtime.wait(container, STOP_GRACE_SECONDS) is None:
                    self.ctx.runtime.signal(container, signal.SIGKILL)
                    self.ctx.runtime.wait(container, 10)
            except ShipyardError as exc:
                log.warning("transform job %s: cannot stop %s: %s", self.name, container, exc)

        threads = [threading.Thread(target=end, args=(i.container,), daemon=True)
                   for i in instances]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        await_followers(self.ctx.logs, KIND, self.name, self._followers)

    def _stop_instances(self, instances: list[Instance]) -> None:
        threads = [threading.Thread(target=stop_instance, daemon=True,
                                    args=(self.ctx, i.container, STOP_GRACE_SECONDS))
                   for i in instances]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _complete(self, status: str, reason: str | None) -> None:
        end = records.now()

        def complete(rec: dict[str, Any], run: dict[str, Any]) -> str:
            run["phase"] = "done"
            # Until _clean_up says otherwise: a plane that dies in between leaves containers
            # that the next one's reconcile removes (sweep_finished).
            run["cleaned"] = False
            rec.pop("StatusMessage", None)
            if reason:
                rec["FailureReason"] = reason[: contract.FAILURE_REASON_MAX]
            else:
                rec.pop("FailureReason", None)
            if "TransformStartTime" in rec:
                rec["TransformEndTime"] = end
            return records.set_status(KIND, rec, status, end)

        self.ctx.store.mutate(KIND, self.name, complete)


def _headers(record: dict[str, Any]) -> dict[str, str]:
    """``ContentType`` and ``Accept`` go on every request, as SageMaker sends them."""
    headers = {}
    content_type = record["TransformInput"].get("ContentType")
    if content_type:
        headers["Content-Type"] = content_type
    accept = record["TransformOutput"].get("Accept")
    if accept:
        headers["Accept"] = accept
    return headers


def _execution_parameters(instance: Instance) -> Any:
    """The container's ``GET /execution-parameters`` JSON, or None when it has none."""
    conn = http.client.HTTPConnection(_LOCAL, instance.port,
                                      timeout=EXECUTION_PARAMETERS_TIMEOUT_S)
    try:
        conn.request("GET", EXECUTION_PARAMETERS_PATH)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return None
        return json.loads(body)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


@dataclass
class _Pending:
    """One object whose requests are out: its answers arrive in any order."""

    rel: str
    work: ObjectWork
    answers: list[bytes | None]
    remaining: int


@dataclass
class _Connection:
    instance: Instance
    timeout: float
    conn: http.client.HTTPConnection | None = field(default=None)

    def post(self, payload: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(_LOCAL, self.instance.port,
                                                   timeout=self.timeout)
        try:
            self.conn.request("POST", INVOCATIONS_PATH, body=payload, headers=headers)
            response = self.conn.getresponse()
            body = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, body

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def abort(self) -> None:
        """Wake a request blocked on this connection (from another thread): shutting the
        socket down ends its wait at once, where close() alone would not."""
        conn = self.conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Dispatcher:
    """Sends every object's payloads over ``MaxConcurrentTransforms`` connections per
    instance and delivers each object once all its answers are in."""

    def __init__(self, instances: list[Instance], parameters: TransformParameters,
                 headers: dict[str, str], stop: threading.Event,
                 deliver: Callable[[str, bytes], None]) -> None:
        per_instance = min(parameters.max_concurrent_transforms, MAX_CONNECTIONS_PER_INSTANCE)
        self.connections = [_Connection(instance, float(parameters.invocations_timeout_s))
                            for _ in range(per_instance) for instance in instances]
        self.parameters = parameters
        self.headers = headers
        self.stop = stop
        self.deliver = deliver
        #: ``None`` tells a worker that nothing more will come.
        self.tasks: queue.Queue[tuple[_Pending, int] | None] = queue.Queue(
            maxsize=2 * len(self.connections))
        self.failure: str | None = None
        #: Objects with requests out, and objects written.
        self.expected = 0
        self.delivered = 0
        self.produced = threading.Event()
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self, objects: list[tuple[str, Path]], plan: TransformPlan) -> str | None:
        """Process every object; the first failure's reason, or None."""
        workers = [threading.Thread(target=self._work, args=(conn,), daemon=True,
                                    name=f"transform-worker-{index}")
                   for index, conn in enumerate(self.connections)]
        for worker in workers:
            worker.start()
        try:
            for rel, path in objects:
                if self._halted():
                    break
                try:
                    work = plan.work(path.read_bytes())
                    if not work.batches:
                        self.deliver(rel, work.output([]))
                        self.delivered += 1
                        continue
                except DataSourceError as exc:
                    self._fail(f"{rel}: {exc}")
                    break
                except ShipyardError as exc:
                    self._fail(f"{rel}: {exc}")
                    break
                except OSError as exc:
                    self._fail(f"{rel}: cannot read the staged input: {exc}")
                    break
                pending = _Pending(rel, work, [None] * len(work.batches), len(work.batches))
                self.expected += 1
                for index in range(len(work.batches)):
                    if not self._put((pending, index)):
                        break
        finally:
            self.produced.set()
            # One end marker per worker, behind every task: each worker leaves as soon as the
            # work runs out, not after its next get() timeout (up to 50 ms on every job).
            for _ in workers:
                if not self._put(None):
                    break
            while True:
                alive = [worker for worker in workers if worker.is_alive()]
                if not alive:
                    break
                if self._halted():
                    # Stopped or failed: requests in flight are not waited for.
                    for conn in self.connections:
                        conn.abort()
                alive[0].join(0.05)
            for conn in self.connections:
                conn.close()
        if self.failure is None and not self.stop.is_set() and self.delivered < self.expected:
            self.failure = (f"InternalServerError: {self.expected - self.delivered} objects"
                            " were sent but never completed")
        return self.failure

    def _halted(self) -> bool:
        return self._halt.is_set() or self.stop.is_set()

    def _put(self, task: tuple[_Pending, int] | None) -> bool:
        while not self._halted():
            try:
                self.tasks.put(task, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = reason
        self._halt.set()

    def _work(self, conn: _Connection) -> None:
        while not self._halted():
            try:
                task = self.tasks.get(timeout=0.05)
            except queue.Empty:
                if self.produced.is_set():
                    return
                continue
            if task is None:
                return
            pending, index = task
            try:
                answer = self._invoke(conn, pending, index)
                with self._lock:
                    pending.answers[index] = answer
                    pending.remaining -= 1
                    last = pending.remaining == 0
                if last:
                    answers = [a if a is not None else b"" for a in pending.answers]
                    self.deliver(pending.rel, pending.work.output(answers))
                    with self._lock:
                        self.delivered += 1
            except ShipyardError as exc:
                self._fail(f"{pending.rel}: {exc}")
            except Exception as exc:
                log.error("transform worker crashed:\n%s", traceback.format_exc())
                self._fail(f"{pending.rel}: InternalServerError: {type(exc).__name__}: {exc}")

    def _invoke(self, conn: _Connection, pending: _Pending, index: int) -> bytes:
        """POST one payload, retrying as ModelClientConfig says; ``ModelError`` if it fails."""
        payload = pending.work.batches[index].payload
        what = pending.work.describe(index)
        error = ModelError(f"{what} was not sent")
        attempts = 0
        for attempt in range(int(self.parameters.invocations_max_retries) + 1):
            if attempt:
                if self._halted():
                    break
                time.sleep(RETRY_BACKOFF_SECONDS * attempt)
            attempts += 1
            try:
                status, body = conn.post(payload, self.headers)
            except TimeoutError:
                error = ModelError(f"the model did not answer {what} within"
                                   " InvocationsTimeoutInSeconds"
                                   f" ({self.parameters.invocations_timeout_s} s)")
                continue
            except (OSError, http.client.HTTPException) as exc:
                error = ModelError(f"the model's container dropped {what} without an answer"
                                   f" ({type(exc).__name__}: {exc})")
                continue
            if status == 200:
                return body
            message = body.decode("utf-8", errors="replace").strip()
            if len(message) > MESSAGE_CHARS:
                message = message[:MESSAGE_CHARS] + "..."
            error = ModelError(f"the model answered {status} to {what}"
                               + (f": {message}" if message else ""),
                               original_status_code=status, original_message=message)
            if status < 500:
                break
        if attempts > 1:
            error = ModelError(f"{error.message} (tried {attempts} times)",
                               original_status_code=error.original_status_code,
                               original_message=error.original_message)
        raise error


def sweep_finished(ctx: Context) -> list[str]:
    """Stop what finished jobs left running: containers of a job whose driver recorded the
    outcome but died before stopping them. Returns the jobs swept."""
    swept = []
    for row in ctx.store.list_jobs(KIND, statuses=records.TERMINAL_STATUSES, limit=100_000):
        if row.runner.get("cleaned") is not False:
            continue
        for leftover in ctx.runtime.list({JOB_KIND_LABEL: KIND, JOB_NAME_LABEL: row.name}):
            stop_instance(ctx, leftover, 0)
        remove_owner_network(ctx, KIND, row.name)
        if row.runner.get("job_dir"):
            shutil.rmtree(row.runner["job_dir"], ignore_errors=True)
        ctx.store.mutate(KIND, row.name, lambda rec, run: run.update(cleaned=True))
        swept.append(row.name)
    return swept
