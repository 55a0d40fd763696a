"""Drives one run-to-completion job from staging to artifacts, and can resume after a crash.

Phases, recorded in the job's runner state so a new supervisor continues where the last
stopped: ``created`` (stage data, write config files, start containers) -> ``running``
(follow logs and metrics, enforce stop and MaxRuntime) -> ``done`` (outcome, artifacts,
cleanup). Whoever holds the job's lock drives it; a supervisor that cannot take the lock
returns at once, so starting one twice is harmless.

Stop and MaxRuntime follow SageMaker: SIGTERM to every container, SIGKILL after the grace
period (120 s unless configured). If one host of a multi-host job fails, the others are
stopped the same way and the job fails.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shipyard import contract
from shipyard.contract.archives import safe_extract
from shipyard.contract.paths import OptMl
from shipyard.control import artifacts, processing, records, staging, training
from shipyard.control.context import Context
from shipyard.control.jobspec import HostPlan, source_uri_of_channel
from shipyard.control.logs import await_followers
from shipyard.control.metrics import MetricExtractor, final_metric_data
from shipyard.errors import ResourceNotFound, ShipyardError
from shipyard.runtimes.base import (
    HOST_LABEL,
    JOB_KIND_LABEL,
    JOB_NAME_LABEL,
    MANAGED_LABEL,
    ContainerSpec,
    ContainerState,
    LogLine,
)

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
LOG_TAIL_LINES = 15
#: How often a follower turns the lines it has stored into metric points.
METRICS_SECONDS = 0.5

# Runner-state triggers: why the containers are being stopped.
STOP, MAX_RUNTIME, HOST_FAILED = "stop", "max-runtime", "host-failed"


class _Background:
    """One call on a thread of its own; ``result()`` waits and re-raises its error."""

    def __init__(self, call: Callable[[], None]) -> None:
        self._error: BaseException | None = None

        def run() -> None:
            try:
                call()
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


class Supervisor:
    def __init__(self, ctx: Context, kind: str, name: str) -> None:
        self.ctx = ctx
        self.kind = kind
        self.name = name
        self._followers: dict[str, threading.Thread] = {}
        #: Set once the outcome is being recorded and containers removed: a graceful server
        #: stop waits for this part (bounded) instead of leaving containers behind.
        self.finishing = threading.Event()

    # -- entry ------------------------------------------------------------------------------
    def run(self) -> bool:
        """Drive the job to a terminal status; False if another supervisor holds it."""
        lock = self.ctx.job_lock(self.kind, self.name)
        if not lock.acquire():
            return False
        try:
            row = self.ctx.store.get_job(self.kind, self.name)
            if row.status in records.TERMINAL_STATUSES:
                return True
            try:
                if row.runner.get("phase", "created") == "created":
                    self._prepare()
                self._supervise()
                self._finish()
            except ShipyardError as exc:
                self._fail_early(str(exc))
            except Exception as exc:
                log.error("supervisor of %s %s crashed:\n%s", self.kind, self.name,
                          traceback.format_exc())
                self._fail_early(f"InternalServerError: {type(exc).__name__}: {exc}")
            return True
        finally:
            lock.release()

    # -- helpers ----------------------------------------------------------------------------
    def _mutate(self, change: Any) -> Any:
        return self.ctx.store.mutate(self.kind, self.name, change)

    def _transition(self, status: str, message: str) -> None:
        if self.kind != training.KIND:
            return
        at = records.now()
        self._mutate(lambda rec, run: records.transition(rec, status, message, at))

    def _mark(self, event: str) -> None:
        """Wall-clock time of a phase boundary, kept in the runner state for benchmarks."""
        at = time.time()
        self._mutate(lambda rec, run: run.setdefault("timings", {}).__setitem__(event, at))

    def _runner(self) -> dict[str, Any]:
        return self.ctx.store.get_job(self.kind, self.name).runner

    def _labels(self, uid: str, host: str) -> dict[str, str]:
        return {MANAGED_LABEL: "true", JOB_KIND_LABEL: self.kind, JOB_NAME_LABEL: self.name,
                "org.shipyard.job-uid": uid, HOST_LABEL: host}

    # -- phase: created ---------------------------------------------------------------------
    def _prepare(self) -> None:
        row = self.ctx.store.get_job(self.kind, self.name)
        record, runner = row.record, row.runner
        uid = runner.get("uid") or uuid.uuid4().hex[:8]
        runtime = self.ctx.runtime
        # A supervisor that died mid-start may have left containers: start from clean.
        for leftover in runtime.list({JOB_NAME_LABEL: self.name, "org.shipyard.job-uid": uid}):
            runtime.remove(leftover)
        job_dir = self.ctx.job_dir(self.kind, self.name, uid)
        if job_dir.exists():
            shutil.rmtree(job_dir)
        job_dir.mkdir(parents=True)
        isolated = (record.get("EnableNetworkIsolation") if self.kind == training.KIND
                    else processing.network_isolated(record))
        hosts = (training.host_count(record) if self.kind == training.KIND
                 else processing.host_count(record))
        network = "none"
        if not isolated or hosts > 1:
            # Every job on a network of its own, as SageMaker isolates jobs: no route to
            # another job's or an endpoint's containers. Peers reach each other even under
            # isolation (SageMaker's rule), on an internal network then (nothing outside it).
            network = f"shipyard-{self.kind}-{self.name}-{uid}"
        # Recorded before it exists, so whoever cleans up after a crash removes it too.
        self._mutate(lambda rec, run: run.update(uid=uid, job_dir=str(job_dir),
                                                 network=network))
        self._mark("prepare_start")
        # The engine takes ~0.1 s to make a network: done while the data is staged.
        made = _Background(lambda: None if network == "none" else runtime.create_network(
            network, {MANAGED_LABEL: "true", JOB_KIND_LABEL: self.kind,
                      JOB_NAME_LABEL: self.name}, internal=bool(isolated)))
        try:
            plans = self._stage_and_plan(record, job_dir)
        finally:
            made.result()
        self._mark("staged")
        image = (record["AlgorithmSpecification"]["TrainingImage"] if self.kind == training.KIND
                 else record["AppSpecification"]["ImageUri"])
        resources = (record["ResourceConfig"] if self.kind == training.KIND
                     else record["ProcessingResources"]["ClusterConfig"])
        limits = contract.resources_for(resources["InstanceType"])
        if self.ctx.store.stop_requested(self.kind, self.name):
            self._mutate(lambda rec, run: run.update(phase="running", containers={},
                                                     network=network, trigger=STOP))
            return
        containers: dict[str, str] = {}
        for plan in plans:
            cname = f"shipyard-{self.kind}-{self.name}-{uid}-{plan.host}"
            runtime.start(ContainerSpec(
                name=cname, image=image, command=plan.command, entrypoint=plan.entrypoint,
                env=plan.env, mounts=plan.mounts, labels=self._labels(uid, plan.host),
                hostname=plan.host, network=network,
                network_aliases=[plan.host] if network not in (None, "none") else [],
                cpus=limits.cpus if limits else None,
                memory_bytes=limits.memory_bytes if limits else None,
                root_dir=str(plan.root),
            ))
            containers[plan.host] = cname
        started = records.now()

        def mark_running(rec: dict[str, Any], run: dict[str, Any]) -> None:
            run.update(phase="running", containers=containers, network=network,
                       started=started)
            run.setdefault("timings", {})["started"] = time.time()
            if self.kind == training.KIND:
                rec["TrainingStartTime"] = started
                records.transition(rec, "Training",
                                   "Training image download completed. Training in progress.",
                                   started)
            else:
                rec["ProcessingStartTime"] = started
                rec["LastModifiedTime"] = started

        self._mutate(mark_running)

    def _stage_and_plan(self, record: dict[str, Any], job_dir: Path) -> list[HostPlan]:
        staging_root = job_dir / "staging"
        if self.kind == training.KIND:
            hosts = contract.host_names(training.host_count(record))
            self._transition("Downloading", "Downloading input data")
            channels: dict[str, dict[str, Path]] = {}
            for channel in record["InputDataConfig"]:
                uri, data_type, distribution = source_uri_of_channel(channel)
                staged = staging.stage_input(uri, data_type, distribution, hosts,
                                             staging_root / channel["ChannelName"],
                                             self._s3_for(uri), roots=self.ctx.file_roots)
                channels[channel["ChannelName"]] = {h: p.host_path for h, p in staged.items()}
            checkpoints = self._restore_checkpoints(record, job_dir, hosts)
            return training.plan_hosts(record, job_dir, channels, checkpoints,
                                       self._stage_code(record, job_dir))
        hosts = contract.host_names(processing.host_count(record))
        inputs: dict[str, dict[str, Path]] = {}
        for item in record["ProcessingInputs"]:
            s3 = item["S3Input"]
            staged = staging.stage_input(s3["S3Uri"], s3["S3DataType"],
                                         s3["S3DataDistributionType"], hosts,
                                         staging_root / item["InputName"],
                                         self._s3_for(s3["S3Uri"]), roots=self.ctx.file_roots)
            inputs[item["InputName"]] = {h: p.host_path for h, p in staged.items()}
        return processing.plan_hosts(record, job_dir, inputs)

    def _stage_code(self, record: dict[str, Any], job_dir: Path) -> Path | None:
        """Fetch an s3:// or file:// submit directory; tarballs are checked, then extracted."""
        submit = training.submit_directory(record)
        if submit is None or not training.platform_stages_code(submit[0]):
            return None
        uri = submit[0]
        if uri.startswith("s3://"):
            source = job_dir / "code-download" / "sourcedir.tar.gz"
            self.ctx.s3.download_file(uri, source)
        else:
            source = staging.local_path_from_uri(uri, self.ctx.file_roots)
            if source.is_dir():
                return source
        code = job_dir / "code"
        safe_extract(source, code)
        return code

    def _destination(self, uri: str) -> str:
        """An output location as it is written: s3:// as given, a local one resolved and
        checked again now (the container may have made a folder on the way a link)."""
        if uri.startswith("s3://"):
            return uri
        return str(self.ctx.file_roots.path(uri, "output"))

    def _s3_for(self, uri: str) -> Any:
        return self.ctx.s3 if uri.startswith("s3://") else None

    def _restore_checkpoints(self, record: dict[str, Any], job_dir: Path, hosts: list[str]
                             ) -> dict[str, Path]:
        """SageMaker restores CheckpointConfig.S3Uri into the local path before training and
        syncs it back. A file:// or local checkpoint location is mounted read-write as it is,
        which is that sync without a copy; an s3:// one is downloaded now, uploaded at the end.
        """
        config = record.get("CheckpointConfig")
        if config is None:
            return {}
        uri = config["S3Uri"]
        if not uri.startswith("s3://"):
            folder = self.ctx.file_roots.path(uri, "CheckpointConfig.S3Uri")
            folder.mkdir(parents=True, exist_ok=True)
            return {host: folder for host in hosts}
        dirs = {}
        existing = self.ctx.s3.list_objects(uri)
        for host in hosts:
            folder = job_dir / "checkpoints" / host
            if existing:
                staged = staging.stage_input(uri, "S3Prefix", "FullyReplicated", [host],
                                             job_dir / "checkpoint-staging" / host, self.ctx.s3)
                shutil.copytree(staged[host].host_path, folder, dirs_exist_ok=True)
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)
            dirs[host] = folder
        return dirs

    # -- phase: running ---------------------------------------------------------------------
    def _supervise(self) -> None:
        row = self.ctx.store.get_job(self.kind, self.name)
        runner = row.runner
        containers: dict[str, str] = runner.get("containers", {})
        runtime = self.ctx.runtime
        definitions = (row.record["AlgorithmSpecification"].get("MetricDefinitions") or []
                       if self.kind == training.KIND else [])
        for host, cname in containers.items():
            thread = threading.Thread(target=self._follow, args=(host, cname, definitions),
                                      name=f"logs-{self.name}-{host}", daemon=True)
            thread.start()
            self._followers[host] = thread
        max_runtime = float(row.record["StoppingCondition"]["MaxRuntimeInSeconds"])
        started = float(runner.get("started") or records.now())
        grace = float(self.ctx.settings.stop_grace_seconds)
        trigger: str | None = runner.get("trigger")
        kill_at: float | None = runner.get("kill_at")
        finals: dict[str, ContainerState] = {}
        while len(finals) < len(containers):
            running = [h for h in containers if h not in finals]
            timeout = POLL_SECONDS if len(running) == 1 else POLL_SECONDS / len(running)
            for host in running:
                try:
                    state = runtime.wait(containers[host], timeout)
                except ResourceNotFound:
                    state = None  # removed from outside: told apart just below
                if state is None and runtime.inspect(containers[host]) is None:
                    state = ContainerState(containers[host], False, exit_code=None,
                                           error="the container disappeared")
                if state is not None:
                    finals[host] = state
            if len(finals) == len(containers):
                break
            new_trigger = None
            if trigger is None:
                if self.ctx.store.stop_requested(self.kind, self.name):
                    new_trigger = STOP
                elif time.time() - started > max_runtime:
                    new_trigger = MAX_RUNTIME
                elif any(s.exit_code != 0 or s.oom_killed for s in finals.values()):
                    new_trigger = HOST_FAILED
            if new_trigger is not None:
                trigger, kill_at = new_trigger, time.time() + grace
                marks = {"trigger": trigger, "kill_at": kill_at}
                self._mutate(lambda rec, run, marks=marks: run.update(marks))
                if trigger == MAX_RUNTIME:
                    self._transition("MaxRuntimeExceeded",
                                     "Job stopped because max runtime exceeded.")
                for host, cname in containers.items():
                    if host not in finals:
                        runtime.signal(cname, signal.SIGTERM)
            if kill_at is not None and time.time() >= kill_at:
                for host, cname in containers.items():
                    if host not in finals:
                        runtime.signal(cname, signal.SIGKILL)
                kill_at = time.time() + 5  # re-send if the engine was slow to act
        self._mark("exited")
        # Docker ends a follow stream once it has delivered everything an exited container
        # printed; that can be many seconds after the exit for a chatty job.
        await_followers(self.ctx.logs, self.kind, self.name, self._followers)
        logged = time.time()
        if trigger is None and self.ctx.store.stop_requested(self.kind, self.name):
            trigger = STOP

        def mark_exited(rec: dict[str, Any], run: dict[str, Any]) -> None:
            run.setdefault("timings", {})["logged"] = logged
            run.update(trigger=trigger, finals={
                h: {"exit_code": s.exit_code, "oom_killed": s.oom_killed, "error": s.error,
                    "finished_at": s.finished_at} for h, s in finals.items()})

        self._mutate(mark_exited)

    def _follow(self, host: str, cname: str, definitions: list[dict[str, Any]]) -> None:
        extractor = MetricExtractor(definitions)
        since = self.ctx.logs.last_timestamp_ns(self.kind, self.name, host)
        unparsed: list[LogLine] = []
        parsed_at = time.monotonic()
        try:
            with self.ctx.logs.open_append(self.kind, self.name, host) as out:
                for line in self.ctx.runtime.logs(cname, since_ns=since, follow=True):
                    out.write(line)
                    if definitions:
                        # Parsed in batches: one regex pass and one insert per half second.
                        unparsed.append(line)
                        if time.monotonic() - parsed_at > METRICS_SECONDS:
                            self.ctx.store.add_metrics(self.kind, self.name, host,
                                                       extractor.extract(unparsed))
                            unparsed, parsed_at = [], time.monotonic()
        except ShipyardError as exc:
            log.warning("log stream of %s/%s ended: %s", self.name, host, exc)
        finally:
            self.ctx.store.add_metrics(self.kind, self.name, host, extractor.extract(unparsed))

    # -- phase: done ------------------------------------------------------------------------
    def _finish(self) -> None:
        self.finishing.set()
        row = self.ctx.store.get_job(self.kind, self.name)
        record, runner = row.record, row.runner
        finals: dict[str, dict[str, Any]] = runner.get("finals", {})
        trigger = runner.get("trigger")
        job_dir = Path(runner["job_dir"])
        roots = {h: job_dir / "hosts" / h for h in finals}
        status, reason = self._outcome(trigger, finals, roots, record)
        if status != records.FAILED or self.kind == processing.KIND:
            self._transition("Uploading", "Uploading generated training model")
        self._mark("collected")
        upload_error = self._deliver(record, roots, status, job_dir)
        if upload_error and status != records.FAILED:
            status, reason = records.FAILED, upload_error
        exit_message = self._exit_message(roots) if self.kind == processing.KIND else None
        series = self.ctx.store.metric_series(self.kind, self.name)
        end = records.now()
        started = float(runner.get("started") or end)

        def complete(rec: dict[str, Any], run: dict[str, Any]) -> str:
            run["phase"] = "done"
            run.setdefault("timings", {})["done"] = time.time()
            if reason:
                rec["FailureReason"] = reason[: contract.FAILURE_REASON_MAX]
            if self.kind == training.KIND:
                if series:
                    rec["FinalMetricDataList"] = final_metric_data(series)
                if "TrainingStartTime" in rec:
                    rec["TrainingEndTime"] = end
                    seconds = max(1, round(end - started))
                    rec["TrainingTimeInSeconds"] = seconds
                    rec["BillableTimeInSeconds"] = seconds
                secondary, message = {
                    records.COMPLETED: ("Completed", "Training job completed"),
                    records.STOPPED: ("Stopped", "Training job stopped"),
                }.get(status, ("Failed", f"Training job failed. Reason: {reason or ''}"[:1024]))
                if not (trigger == MAX_RUNTIME and status == records.FAILED):
                    records.transition(rec, secondary, message, end)
                else:
                    transitions = rec.get("SecondaryStatusTransitions") or []
                    if transitions and "EndTime" not in transitions[-1]:
                        transitions[-1]["EndTime"] = end
            else:
                if exit_message is not None:
                    rec["ExitMessage"] = exit_message
                if "ProcessingStartTime" in rec:
                    rec["ProcessingEndTime"] = end
            return records.set_status(self.kind, rec, status, end)

        self._mutate(complete)
        self._cleanup(runner, job_dir)

    def _outcome(self, trigger: str | None, finals: dict[str, dict[str, Any]],
                 roots: dict[str, Path], record: dict[str, Any]) -> tuple[str, str | None]:
        if trigger == STOP:
            return records.STOPPED, None
        if trigger == MAX_RUNTIME:
            limit = record["StoppingCondition"]["MaxRuntimeInSeconds"]
            return records.FAILED, (f"MaxRuntimeExceeded: the job ran past its "
                                    f"MaxRuntimeInSeconds limit of {limit} s and was stopped.")
        failed = [h for h in sorted(finals)
                  if finals[h]["exit_code"] != 0 or finals[h]["oom_killed"]]
        if not failed:
            return records.COMPLETED, None
        # The host that failed on its own (not the ones we stopped after it) explains the job.
        host = min(failed, key=lambda h: finals[h].get("finished_at") or float("inf"))
        final = finals[host]
        if final["oom_killed"]:
            return records.FAILED, contract.OOM_FAILURE_REASON
        failure = Path(OptMl.at(roots[host]).failure_file)
        if failure.is_file():
            text = failure.read_text(encoding="utf-8", errors="replace")
            if text.strip():
                return records.FAILED, text[: contract.FAILURE_REASON_MAX]
        if final["exit_code"] is None:
            return records.FAILED, (f"InternalServerError: the container of {host} ended "
                                    f"without an exit code: {final.get('error') or 'unknown'}")
        tail = "\n".join(self.ctx.logs.tail_text(self.kind, self.name, host, LOG_TAIL_LINES))
        head = (f"AlgorithmError: the container of {host} exited with code "
                f"{final['exit_code']} and wrote no /opt/ml/output/failure. Last log lines:\n")
        room = contract.FAILURE_REASON_MAX - len(head)
        return records.FAILED, head + (tail[-room:] if room > 0 else "")

    def _deliver(self, record: dict[str, Any], roots: dict[str, Path], status: str,
                 job_dir: Path) -> str | None:
        """Upload what SageMaker uploads; the failure text if that fails."""
        try:
            if self.kind == training.KIND:
                model_uri, output_uri = artifacts.training_output_uris(
                    record["OutputDataConfig"]["S3OutputPath"], self.name)
                if status != records.FAILED:
                    merged = job_dir / "merged-model"
                    artifacts.merge_dirs([Path(OptMl.at(r).model_dir) for r in roots.values()],
                                         merged)
                    artifacts.pack_and_upload(merged, self._destination(model_uri),
                                              self._s3_for(model_uri))
                merged_out = job_dir / "merged-output"
                artifacts.merge_dirs([Path(OptMl.at(r).output_data_dir) for r in roots.values()],
                                     merged_out)
                artifacts.pack_and_upload(merged_out, self._destination(output_uri),
                                          self._s3_for(output_uri))
                checkpoint = record.get("CheckpointConfig")
                if checkpoint is not None and checkpoint["S3Uri"].startswith("s3://"):
                    for host in roots:
                        artifacts.upload_dir(job_dir / "checkpoints" / host, checkpoint["S3Uri"],
                                             self._s3_for(checkpoint["S3Uri"]))
            else:
                for item in processing.outputs(record):
                    uri = item["S3Output"]["S3Uri"]
                    for root in roots.values():
                        artifacts.upload_dir(processing.output_dir(root, item["OutputName"]),
                                             self._destination(uri), self._s3_for(uri))
        except ShipyardError as exc:
            return f"ClientError: uploading the job's output failed: {exc}"
        return None

    def _exit_message(self, roots: dict[str, Path]) -> str | None:
        texts = []
        for host in sorted(roots):
            path = Path(OptMl.at(roots[host]).message_file)
            if path.is_file():
                texts.append(path.read_bytes().decode("utf-8", errors="replace"))
        if not texts:
            return None
        return "".join(texts)[: contract.EXIT_MESSAGE_MAX]

    def _cleanup(self, runner: dict[str, Any], job_dir: Path) -> None:
        runtime = self.ctx.runtime
        if self.ctx.settings.remove_containers:
            for cname in runner.get("containers", {}).values():
                try:
                    runtime.remove(cname)
                except ShipyardError as exc:
                    log.warning("could not remove %s: %s", cname, exc)
        network = runner.get("network")
        if network not in (None, "none"):
            try:
                runtime.remove_network(network)
            except ShipyardError as exc:
                log.warning("could not remove network %s: %s", network, exc)
        shutil.rmtree(job_dir, ignore_errors=True)

    def _fail_early(self, reason: str) -> None:
        """A failure of the platform or of the job's inputs: the job ends Failed, cleaned up."""
        self.finishing.set()
        runner = self._runner()
        at = records.now()

        def fail(rec: dict[str, Any], run: dict[str, Any]) -> str:
            run["phase"] = "done"
            rec["FailureReason"] = reason[: contract.FAILURE_REASON_MAX]
            if self.kind == training.KIND:
                records.transition(rec, "Failed", f"Training job failed. Reason: {reason}"[:1024],
                                   at)
            return records.set_status(self.kind, rec, records.FAILED, at)

        self._mutate(fail)
        for cname in runner.get("containers", {}).values():
            try:
                self.ctx.runtime.remove(cname)
            except ShipyardError:
                pass
        if runner.get("job_dir"):
            self._cleanup({"network": runner.get("network")}, Path(runner["job_dir"]))
