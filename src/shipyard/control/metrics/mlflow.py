"""Jobs forwarded to an MLflow tracking server (setting ``mlflow_tracking_uri``).

Each training job becomes one MLflow run in the experiment its ``ExperimentConfig`` names
(else ``shipyard``): its hyperparameters as params, every ``MetricDefinitions`` series as a
metric history (steps in log order, timestamps of the log lines), its status, its tags and
SageMaker's fields as tags, ``shipyard.model_artifact`` the model archive's location. Each
tuning job becomes a parent run whose children are its trials (``mlflow.parentRunId``), with
the best trial and objective. A run is found again by its tag ``shipyard.arn``, so a job
forwarded twice (a retry, a trial failed after the fact) updates its run.

A running training job's run is created with its first metric points and gets its new ones
at most every :data:`PROGRESS_SECONDS`; the job is forwarded whole once it has ended.

Forwarding is off the job's path: :meth:`MlflowForwarder.submit` (and ``progress``) only
puts the job's name on a bounded queue, once (a full queue drops it, with a warning). One
worker thread reads the job's record and series from the state store and speaks MLflow's
REST API (``/api/2.0/mlflow``, plain HTTP, no ``mlflow`` package needed); a failed call is
retried with backoff, and a job that still cannot be forwarded after :data:`ATTEMPTS` tries
is dropped with a warning. An unreachable tracking server therefore never fails or slows a
job.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shipyard import kinds
from shipyard.control.state.store import Store
from shipyard.errors import ShipyardError

__all__ = ["ATTEMPTS", "DEFAULT_EXPERIMENT", "MlflowForwarder", "RunData", "Tracking",
           "TrackingError", "mlflow_key", "training_run", "tuning_run"]

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "shipyard"
#: Tries per job before it is dropped, and the first pause between two (doubling).
ATTEMPTS = 5
BACKOFF_SECONDS = 0.5
#: Seconds one HTTP call may take.
CALL_TIMEOUT_SECONDS = 5.0
#: Jobs waiting to be forwarded, at most.
QUEUE_SIZE = 1000
#: How long closing waits for the jobs still queued.
FLUSH_SECONDS = 5.0
#: A running job's new points are forwarded at most this often.
PROGRESS_SECONDS = 5.0
ARN_TAG = "shipyard.arn"
PARENT_TAG = "mlflow.parentRunId"
#: MLflow's log-batch limits (REST API reference, "Log Batch").
_BATCH_METRICS, _BATCH_PARAMS, _BATCH_TAGS = 1000, 100, 100
_PARAM_MAX, _TAG_MAX = 6000, 8000
_STATUS = {"Completed": "FINISHED", "Failed": "FAILED", "Stopped": "KILLED"}
#: What MLflow refuses in a param, metric or tag key (``mlflow.utils.validation``), and its
#: length limit for keys.
_BAD_KEY = re.compile(r"[^/\w.\- :]")
_KEY_MAX = 250


def mlflow_key(name: str) -> str:
    """``name`` as a key MLflow takes: other characters become ``_``, empty, ``.`` and
    ``..`` path parts go (keys are paths in its artifact layout)."""
    key = _BAD_KEY.sub("_", name)
    key = "/".join(part for part in key.split("/") if part not in ("", ".", ".."))
    return (key or "_")[:_KEY_MAX]


class TrackingError(Exception):
    """A call the tracking server did not answer, or answered with an error."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Tracking:
    """MLflow's REST API at ``uri`` (``http://host:port``, a path prefix allowed)."""

    def __init__(self, uri: str, timeout: float = CALL_TIMEOUT_SECONDS) -> None:
        self.base = uri.rstrip("/") + "/api/2.0/mlflow"
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None
             ) -> dict[str, Any]:
        url = f"{self.base}/{path}"
        data = None
        if method == "GET" and body:
            url += "?" + urllib.parse.urlencode(body)
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return dict(json.loads(response.read() or b"{}"))
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")[:500]
            code = ""
            try:
                code = str(json.loads(text).get("error_code", ""))
            except (ValueError, AttributeError):
                pass
            raise TrackingError(f"{method} {path}: HTTP {exc.code} {code or text}",
                                retryable=exc.code >= 500 or exc.code == 429) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TrackingError(f"{method} {path}: {exc}", retryable=True) from exc

    def experiment_id(self, name: str) -> str:
        try:
            found = self.call("GET", "experiments/get-by-name", {"experiment_name": name})
            return str(found["experiment"]["experiment_id"])
        except TrackingError as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc):
                raise
        try:
            return str(self.call("POST", "experiments/create", {"name": name})["experiment_id"])
        except TrackingError as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
            # Created by another client meanwhile.
            found = self.call("GET", "experiments/get-by-name", {"experiment_name": name})
            return str(found["experiment"]["experiment_id"])

    def find_run(self, experiment: str, arn: str) -> str | None:
        answer = self.call("POST", "runs/search", {
            "experiment_ids": [experiment], "max_results": 1,
            "filter": f"tags.`{ARN_TAG}` = '{arn}'"})
        runs = answer.get("runs") or []
        return str(runs[0]["info"]["run_id"]) if runs else None

    def ensure_run(self, experiment: str, arn: str, name: str, start_ms: int,
                   tags: dict[str, str]) -> str:
        """The run tagged ``arn``, created (RUNNING) when there is none."""
        found = self.find_run(experiment, arn)
        if found is not None:
            return found
        created = self.call("POST", "runs/create", {
            "experiment_id": experiment, "run_name": name, "start_time": start_ms,
            "tags": [{"key": k, "value": v} for k, v in {**tags, ARN_TAG: arn}.items()]})
        return str(created["run"]["info"]["run_id"])

    def log(self, run_id: str, data: RunData) -> None:
        """Params, tags and metrics in batches within MLflow's limits, then the status."""
        params = [{"key": k, "value": v[:_PARAM_MAX]} for k, v in data.params.items()]
        tags = [{"key": k, "value": v[:_TAG_MAX]} for k, v in data.tags.items()]
        for start in range(0, len(params), _BATCH_PARAMS):
            self.call("POST", "runs/log-batch", {"run_id": run_id,
                                                 "params": params[start:start + _BATCH_PARAMS]})
        for start in range(0, len(tags), _BATCH_TAGS):
            self.call("POST", "runs/log-batch", {"run_id": run_id,
                                                 "tags": tags[start:start + _BATCH_TAGS]})
        for start in range(0, len(data.metrics), _BATCH_METRICS):
            self.call("POST", "runs/log-batch", {
                "run_id": run_id, "metrics": data.metrics[start:start + _BATCH_METRICS]})
        update: dict[str, Any] = {"run_id": run_id, "status": data.status,
                                  "run_name": data.name}
        if data.end_ms is not None:
            update["end_time"] = data.end_ms
        self.call("POST", "runs/update", update)


@dataclass
class RunData:
    """What one job's run says: MLflow's run fields, built from the job's record."""

    name: str
    arn: str
    experiment: str
    status: str
    start_ms: int
    end_ms: int | None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    #: MLflow's Metric objects: key, value, timestamp (ms), step.
    metrics: list[dict[str, Any]] = field(default_factory=list)


def _ms(epoch: Any) -> int | None:
    return None if epoch is None else int(float(epoch) * 1000)


def _experiment(record: dict[str, Any]) -> str:
    return str((record.get("ExperimentConfig") or {}).get("ExperimentName")
               or DEFAULT_EXPERIMENT)


def training_run(record: dict[str, Any], series: list[tuple[str, float, float, str]],
                 tags: list[tuple[str, str]]) -> RunData:
    """A training job's run: ``record`` its DescribeTrainingJob record, ``series`` its
    metric points (metric, timestamp, value, host; oldest first), ``tags`` its own."""
    status = str(record["TrainingJobStatus"])
    start = _ms(record.get("TrainingStartTime") or record.get("CreationTime")) or 0
    data = RunData(name=str(record["TrainingJobName"]), arn=str(record["TrainingJobArn"]),
                   experiment=_experiment(record), status=_STATUS.get(status, "RUNNING"),
                   start_ms=start, end_ms=_ms(record.get("TrainingEndTime")))
    data.params = {mlflow_key(str(k)): str(v)
                   for k, v in (record.get("HyperParameters") or {}).items()}
    data.tags = {**{mlflow_key(k): v for k, v in tags if not k.startswith("mlflow.")},
                 "sagemaker.training_job_status": status,
                 "sagemaker.training_image": str(
                     record.get("AlgorithmSpecification", {}).get("TrainingImage", "")),
                 "sagemaker.instance_type": str(
                     record.get("ResourceConfig", {}).get("InstanceType", ""))}
    artifact = (record.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if artifact:
        data.tags["shipyard.model_artifact"] = str(artifact)
        data.tags["mlflow.note.content"] = f"Model artifact: [{artifact}]({artifact})"
    if record.get("FailureReason"):
        data.tags["sagemaker.failure_reason"] = str(record["FailureReason"])
    if record.get("TuningJobArn"):
        data.tags["sagemaker.tuning_job_arn"] = str(record["TuningJobArn"])
    steps: dict[tuple[str, str], int] = {}
    for metric, timestamp, value, host in series:
        key = mlflow_key(metric if host == "algo-1" else f"{metric}/{host}")
        step = steps.get((metric, host), 0)
        steps[(metric, host)] = step + 1
        data.metrics.append({"key": key, "value": float(value),
                             "timestamp": int(timestamp * 1000), "step": step})
    return data


def tuning_run(record: dict[str, Any]) -> RunData:
    """A tuning job's parent run: its status, strategy, objective and best trial."""
    status = str(record["HyperParameterTuningJobStatus"])
    config = record.get("HyperParameterTuningJobConfig") or {}
    objective = config.get("HyperParameterTuningJobObjective") or {}
    data = RunData(name=str(record["HyperParameterTuningJobName"]),
                   arn=str(record["HyperParameterTuningJobArn"]),
                   experiment=_experiment(record), status=_STATUS.get(status, "RUNNING"),
                   start_ms=_ms(record.get("CreationTime")) or 0,
                   end_ms=_ms(record.get("HyperParameterTuningEndTime")))
    data.tags = {"sagemaker.tuning_job_status": status,
                 "sagemaker.strategy": str(config.get("Strategy", ""))}
    if objective:
        data.tags["sagemaker.objective"] = (f"{objective.get('Type', '')} "
                                            f"{objective.get('MetricName', '')}").strip()
    best = record.get("BestTrainingJob") or {}
    if best:
        data.tags["sagemaker.best_training_job"] = str(best.get("TrainingJobName", ""))
        final = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        if "Value" in final:
            data.metrics.append({"key": mlflow_key(f"best:{final.get('MetricName', 'obj')}"),
                                 "value": float(final["Value"]),
                                 "timestamp": data.end_ms or data.start_ms, "step": 0})
        data.params = {mlflow_key(str(k)): str(v) for k, v in
                       (best.get("TunedHyperParameters") or {}).items()}
    if record.get("FailureReason"):
        data.tags["sagemaker.failure_reason"] = str(record["FailureReason"])
    return data


def _tuning_name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


class MlflowForwarder:
    """Training and tuning jobs of ``store`` forwarded to the tracking server at ``uri``, by
    one worker thread started on the first :meth:`submit`: a running job's new points as
    they come (:meth:`progress`), each job whole once it has ended (:meth:`submit`)."""

    def __init__(self, uri: str, store: Store, *, attempts: int = ATTEMPTS,
                 backoff: float = BACKOFF_SECONDS, timeout: float = CALL_TIMEOUT_SECONDS,
                 queue_size: int = QUEUE_SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tracking = Tracking(uri, timeout)
        self.uri = uri
        self.store = store
        self.attempts = attempts
        self.backoff = backoff
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue(queue_size)
        self._closed = threading.Event()
        #: Set once closing's wait is over: the worker forwards nothing more.
        self._given_up = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._clock = clock
        self._experiments: dict[str, str] = {}
        #: Jobs on the queue (a job is queued once however often it is submitted).
        self._queued: set[tuple[str, str]] = set()
        #: When each running job was last queued by :meth:`progress`.
        self._progress_at: dict[tuple[str, str], float] = {}
        #: The worker's: run ids by ARN, and per run the steps of each metric sent so far.
        self._runs: dict[str, str] = {}
        self._sent: dict[str, dict[str, int]] = {}
        self._params_sent: set[str] = set()
        #: Jobs forwarded, and dropped, since the start (for tests and logs).
        self.forwarded = 0
        self.dropped = 0

    def progress(self, kind: str, name: str) -> None:
        """Job ``name`` has new metric points: forwarded (its run RUNNING) unless it was
        queued for that in the last :data:`PROGRESS_SECONDS`; never blocks."""
        now = self._clock()
        with self._lock:
            if now - self._progress_at.get((kind, name), -PROGRESS_SECONDS) < PROGRESS_SECONDS:
                return
            self._progress_at[(kind, name)] = now
        self.submit(kind, name)

    def submit(self, kind: str, name: str) -> None:
        """Forward job ``name`` (training or tuning) as it is now, ended or not; never
        blocks."""
        if kind not in (kinds.TRAINING.key, kinds.TUNING.key) or self._closed.is_set():
            return
        with self._lock:
            if (kind, name) in self._queued:
                return
            self._queued.add((kind, name))
        try:
            self._queue.put_nowait((kind, name))
        except queue.Full:
            with self._lock:
                self._queued.discard((kind, name))
            self.dropped += 1
            log.warning("MLflow forwarding: queue full, %s job %s dropped", kind, name)
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mlflow-forwarder",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.close)

    def close(self, timeout: float = FLUSH_SECONDS) -> None:
        """Forward what is queued for up to ``timeout`` seconds, then drop the rest."""
        deadline = self._clock() + timeout
        self._closed.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - self._clock()))
            atexit.unregister(self.close)
        self._given_up.set()
        left = self._queue.qsize()
        if left:
            self.dropped += left
            log.warning("MLflow forwarding: %d job(s) left unforwarded at close", left)

    def _run(self) -> None:
        try:
            for kind, name in self._jobs():
                self._forward_with_retries(kind, name)
        finally:
            self.store.close()  # this thread's connection

    def _jobs(self) -> Iterator[tuple[str, str]]:
        while not self._given_up.is_set():
            try:
                job = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._closed.is_set():
                    return
                continue
            with self._lock:
                # Submitted again from now on: this forward may miss what comes next.
                self._queued.discard(job)
            yield job

    def _forward_with_retries(self, kind: str, name: str) -> None:
        pause = self.backoff
        for attempt in range(1, self.attempts + 1):
            if self._given_up.is_set():
                self.dropped += 1
                log.warning("MLflow forwarding of %s job %s dropped at close", kind, name)
                return
            try:
                self.forward(kind, name)
                self.forwarded += 1
                return
            except TrackingError as exc:
                if not exc.retryable or attempt == self.attempts:
                    self.dropped += 1
                    log.warning("MLflow forwarding of %s job %s dropped after %d attempt(s): "
                                "%s", kind, name, attempt, exc)
                    return
                log.info("MLflow forwarding of %s job %s failed (attempt %d), retrying: %s",
                         kind, name, attempt, exc)
            except ShipyardError as exc:
                self.dropped += 1
                log.warning("MLflow forwarding of %s job %s dropped: %s", kind, name, exc)
                return
            # Closing cuts the pauses short: what is left is dropped at the deadline.
            if self._closed.wait(pause):
                pause = 0.0
            pause *= 2

    def _experiment_id(self, name: str) -> str:
        if name not in self._experiments:
            self._experiments[name] = self.tracking.experiment_id(name)
        return self._experiments[name]

    def _run_id(self, experiment: str, arn: str, name: str, start_ms: int,
                tags: dict[str, str]) -> str:
        if arn not in self._runs:
            self._runs[arn] = self.tracking.ensure_run(experiment, arn, name, start_ms, tags)
        return self._runs[arn]

    def forward(self, kind: str, name: str) -> str:
        """Create or update the job's run now (only the metric points not sent before);
        returns its run id."""
        record = self.store.get_job(kind, name).record
        if kind == kinds.TUNING.key:
            data = tuning_run(record)
        else:
            data = training_run(record, self.store.metric_series(kind, name),
                                self.store.list_tags(str(record["TrainingJobArn"])))
        ended = data.status != "RUNNING"
        try:
            experiment = self._experiment_id(data.experiment)
            tags = dict(data.tags)
            parent = record.get("TuningJobArn")
            if parent:
                tags[PARENT_TAG] = self._run_id(experiment, str(parent),
                                                _tuning_name(str(parent)), data.start_ms, {})
            run_id = self._run_id(experiment, data.arn, data.name, data.start_ms, tags)
            data.tags = tags
            sent = self._sent.setdefault(data.arn, {})
            every = data.metrics
            data.metrics = [m for m in every if m["step"] >= sent.get(m["key"], 0)]
            if data.arn in self._params_sent:
                data.params = {}  # MLflow's params are immutable: sent once
            self.tracking.log(run_id, data)
            self._params_sent.add(data.arn)
            for metric in every:
                sent[metric["key"]] = max(sent.get(metric["key"], 0), metric["step"] + 1)
        except TrackingError:
            # The next try finds the experiment and run again and sends everything (MLflow
            # keeps a point logged twice once).
            self._experiments.pop(data.experiment, None)
            self._forget(data.arn)
            raise
        if ended:
            self._forget(data.arn)
            with self._lock:
                self._progress_at.pop((kind, name), None)
        return run_id

    def _forget(self, arn: str) -> None:
        self._runs.pop(arn, None)
        self._sent.pop(arn, None)
        self._params_sent.discard(arn)
