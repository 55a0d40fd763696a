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
from shipyard.contract.labels import (
    HOST_LABEL,
    JOB_KIND_LABEL,
    JOB_NAME_LABEL,
    MANAGED_LABEL,
    RUN_LABEL,
)
from shipyard.contract.paths import OptMl
from shipyard.control import capacity
from shipyard.control.context import Context
from shipyard.control.jobs.kind import HOST_FAILED, MAX_RUNTIME, STOP, ContainerJob, Outcome
from shipyard.control.jobs.metrics import MetricExtractor
from shipyard.control.limits import limits_for
from shipyard.control.metrics.platform import open_store
from shipyard.control.metrics.utilization import UtilizationSampler
from shipyard.control.s3 import S3Client
from shipyard.control.state import records
from shipyard.control.state.logs import await_followers
from shipyard.errors import ResourceNotFound, ShipyardError
from shipyard.runtimes.base import ContainerSpec, ContainerState, LogLine

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
#: How often a job whose hosts a cluster's scheduler holds looks at them again.
PLACEMENT_POLL_SECONDS = 0.5
LOG_TAIL_LINES = 15
#: How often a follower turns the lines it has stored into metric points.
METRICS_SECONDS = 0.5


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
    """Drives one job of a :class:`ContainerJob` kind; what differs by kind, the kind says."""

    def __init__(self, ctx: Context, job: ContainerJob, name: str) -> None:
        self.ctx = ctx
        self.job = job
        self.kind = job.kind.key
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
            capacity.release(self.ctx, self.kind, self.name)
            return True
        finally:
            lock.release()

    # -- helpers ----------------------------------------------------------------------------
    def _mutate(self, change: Any) -> Any:
        return self.ctx.store.mutate(self.kind, self.name, change)

    def transition(self, status: str, message: str) -> None:
        at = records.now()
        self._mutate(lambda rec, run: self.job.transition(rec, status, message, at))

    def _mark(self, event: str) -> None:
        """Wall-clock time of a phase boundary, kept in the runner state for benchmarks."""
        at = time.time()
        self._mutate(lambda rec, run: run.setdefault("timings", {}).__setitem__(event, at))

    def _runner(self) -> dict[str, Any]:
        return self.ctx.store.get_job(self.kind, self.name).runner

    def _labels(self, uid: str, host: str) -> dict[str, str]:
        return {MANAGED_LABEL: "true", JOB_KIND_LABEL: self.kind, JOB_NAME_LABEL: self.name,
                RUN_LABEL: uid, HOST_LABEL: host}

    # -- phase: created ---------------------------------------------------------------------
    def _prepare(self) -> None:
        row = self.ctx.store.get_job(self.kind, self.name)
        record, runner = row.record, row.runner
        uid = runner.get("uid") or uuid.uuid4().hex[:8]
        runtime = self.ctx.runtime
        # A supervisor that died mid-start may have left containers: start from clean.
        for leftover in runtime.list({JOB_NAME_LABEL: self.name, RUN_LABEL: uid}):
            runtime.remove(leftover)
        job_dir = self.ctx.job_dir(self.kind, self.name, uid)
        if job_dir.exists():
            shutil.rmtree(job_dir)
        job_dir.mkdir(parents=True)
        isolated = self.job.network_isolated(record)
        hosts = self.job.host_count(record)
        network = "none"
        if not isolated or hosts > 1:
            # Every job on a network of its own, as SageMaker isolates jobs: no route to
            # another job's or an endpoint's containers. Peers reach each other even under
            # isolation (SageMaker's rule), on an internal network then (nothing outside it).
            network = f"shipyard-{self.kind}-{self.name}-{uid}"
        # Recorded before it exists, so whoever cleans up after a crash removes it too.
        self._mutate(lambda rec, run: run.update(uid=uid, job_dir=str(job_dir),
                                                 network=network))
        if not self._reserve(record, hosts):
            # Stopped while it waited for capacity: nothing was staged or started.
            def stopped(rec: dict[str, Any], run: dict[str, Any]) -> None:
                rec.pop("StatusMessage", None)
                run.update(phase="running", containers={}, network="none", trigger=STOP)
            self._mutate(stopped)
            return
        self._mark("prepare_start")
        # The engine takes ~0.1 s to make a network: done while the data is staged.
        made = _Background(lambda: None if network == "none" else runtime.create_network(
            network, {MANAGED_LABEL: "true", JOB_KIND_LABEL: self.kind,
                      JOB_NAME_LABEL: self.name}, internal=bool(isolated)))
        try:
            plans = self.job.plan(self, record, job_dir)
        finally:
            made.result()
        self._mark("staged")
        image = self.job.image(record)
        limits = limits_for(self.ctx, self.job.resources(record)["InstanceType"],
                            f"{self.job.kind.label} {self.name}")
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
                cpus=limits.cpus, memory_bytes=limits.memory_bytes, gpus=limits.gpus,
                root_dir=str(plan.root),
            ))
            containers[plan.host] = cname
        if runtime.places_by_reservation:
            self._await_placement(containers)
        started = records.now()

        def mark_running(rec: dict[str, Any], run: dict[str, Any]) -> None:
            run.update(phase="running", containers=containers, network=network,
                       started=started)
            run.setdefault("timings", {})["started"] = time.time()
            self.job.started(rec, started, limits.notice)

        self._mutate(mark_running)

    def _reserve(self, record: dict[str, Any], hosts: int) -> bool:
        """Wait in the capacity queue (``control.capacity``) until every host's reservation
        is held (True), or until the job is stopped (False). While it waits, the job is
        InProgress, ``Starting``, with a ``StatusMessage`` saying what it waits for."""
        return capacity.reserve(
            self.ctx, self.kind, self.name, [(self.job.resources(record)["InstanceType"], hosts)],
            cancelled=lambda: self.ctx.store.stop_requested(self.kind, self.name),
            waiting=self._waiting)

    def _waiting(self, message: str) -> None:
        """The job is ``Starting``, ``message`` saying what for ("": no longer waiting)."""
        at = records.now()

        def say(rec: dict[str, Any], run: dict[str, Any]) -> None:
            if message:
                rec["StatusMessage"] = message
            else:
                rec.pop("StatusMessage", None)
            self.job.transition(rec, "Starting",
                                message or f"Starting the {self.job.kind.label}", at)
        self._mutate(say)

    def _await_placement(self, containers: dict[str, str]) -> None:
        """A runtime whose own scheduler places containers (a cluster) may hold them until a
        node has room: the job stays ``Starting`` meanwhile, saying which host waits for
        what, until every host runs (or one ended, or the job is stopped)."""
        said = ""
        while not self.ctx.store.stop_requested(self.kind, self.name):
            waits: list[str] = []
            for host, cname in containers.items():
                state = self.ctx.runtime.inspect(cname)
                if state is None or not state.running:
                    waits = []
                    break
                if state.waiting:
                    waits.append(f"{host}: {state.waiting}")
            message = f"Waiting for the cluster to place {'; '.join(waits)}" if waits else ""
            if message != said:
                self._waiting(message)
                said = message
            if not waits:
                return
            time.sleep(PLACEMENT_POLL_SECONDS)

    def destination(self, uri: str) -> str:
        """An output location as it is written: s3:// as given, a local one resolved and
        checked again now (the container may have made a folder on the way a link)."""
        if uri.startswith("s3://"):
            return uri
        return str(self.ctx.file_roots.path(uri, "output"))

    def s3_for(self, uri: str) -> S3Client | None:
        return self.ctx.s3 if uri.startswith("s3://") else None

    # -- phase: running ---------------------------------------------------------------------
    def _supervise(self) -> None:
        row = self.ctx.store.get_job(self.kind, self.name)
        runner = row.runner
        containers: dict[str, str] = runner.get("containers", {})
        runtime = self.ctx.runtime
        definitions = self.job.metric_definitions(row.record)
        for host, cname in containers.items():
            thread = threading.Thread(target=self._follow, args=(host, cname, definitions),
                                      name=f"logs-{self.name}-{host}", daemon=True)
            thread.start()
            self._followers[host] = thread
        sampler = self._utilization(runner, containers)
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
                    self.transition("MaxRuntimeExceeded",
                                     "Job stopped because max runtime exceeded.")
                for host, cname in containers.items():
                    if host not in finals:
                        runtime.signal(cname, signal.SIGTERM)
            if kill_at is not None and time.time() >= kill_at:
                for host, cname in containers.items():
                    if host not in finals:
                        runtime.signal(cname, signal.SIGKILL)
                kill_at = time.time() + 5  # re-send if the engine was slow to act
        if sampler is not None:
            sampler.stop()
        # Their containers have exited: what they reserved goes to the next in the queue.
        capacity.release(self.ctx, self.kind, self.name)
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
                    "finished_at": s.finished_at, "node": s.node} for h, s in finals.items()})

        self._mutate(mark_exited)

    def _utilization(self, runner: dict[str, Any], containers: dict[str, str]
                     ) -> UtilizationSampler | None:
        """Hosts' CPU, memory and disk use, sampled into the kind's namespace while the job
        runs (docs/metrics.md); it also stops by itself once no host runs."""
        namespace = self.job.kind.log_group
        if not namespace or not containers:
            return None
        settings = self.ctx.settings
        sampler = UtilizationSampler(self.ctx.runtime, lambda: open_store(settings), namespace,
                                     self.name, containers,
                                     Path(runner.get("job_dir") or settings.data_dir))
        sampler.start()
        return sampler

    def _follow(self, host: str, cname: str, definitions: list[dict[str, Any]]) -> None:
        extractor = MetricExtractor(definitions)
        since = self.ctx.logs.last_timestamp_ns(self.kind, self.name, host)
        unparsed: list[LogLine] = []
        lock = threading.Lock()
        done = threading.Event()

        def flush() -> None:
            with lock:
                batch = unparsed[:]
                unparsed.clear()
            if batch:
                points = extractor.extract(batch)
                self.ctx.store.add_metrics(self.kind, self.name, host, points)
                if points:
                    self.ctx.job_progressed(self.kind, self.name)

        def flush_often() -> None:
            # Parsed in batches (one regex pass and one insert per half second), on a clock
            # of their own: the last value a job printed before going quiet for an epoch
            # reaches the series now, not when the next line comes (a tuner's early
            # stopping reads it).
            while not done.wait(METRICS_SECONDS):
                try:
                    flush()
                except ShipyardError as exc:
                    log.warning("metrics of %s/%s: %s", self.name, host, exc)

        flusher = threading.Thread(target=flush_often, name=f"metrics-{self.name}-{host}",
                                   daemon=True)
        if definitions:
            flusher.start()
        try:
            with self.ctx.logs.open_append(self.kind, self.name, host) as out:
                for line in self.ctx.runtime.logs(cname, since_ns=since, follow=True):
                    out.write(line)
                    if definitions:
                        with lock:
                            unparsed.append(line)
        except ShipyardError as exc:
            log.warning("log stream of %s/%s ended: %s", self.name, host, exc)
        finally:
            done.set()
            if flusher.is_alive():
                flusher.join()
            flush()

    # -- phase: done ------------------------------------------------------------------------
    def _finish(self) -> None:
        self.finishing.set()
        row = self.ctx.store.get_job(self.kind, self.name)
        record, runner = row.record, row.runner
        finals: dict[str, dict[str, Any]] = runner.get("finals", {})
        trigger = runner.get("trigger")
        job_dir = Path(runner["job_dir"])
        # In host order, whatever order they ended in: where hosts wrote the same file,
        # algo-1's copy is the one kept, as on SageMaker.
        roots = {h: job_dir / "hosts" / h
                 for h in sorted(finals, key=lambda h: (len(h), h))}
        status, reason = self._outcome(trigger, finals, roots, record)
        if status != records.FAILED:
            self.transition("Uploading", "Uploading generated training model")
        self._mark("collected")
        try:
            self.job.deliver(self, record, roots, status, job_dir)
        except ShipyardError as exc:
            if status != records.FAILED:
                status, reason = (records.FAILED,
                                  f"ClientError: uploading the job's output failed: {exc}")
        end = records.now()
        outcome = Outcome(status=status, reason=reason, trigger=trigger,
                          started=float(runner.get("started") or end), end=end, roots=roots,
                          series=self.ctx.store.metric_series(self.kind, self.name))

        def complete(rec: dict[str, Any], run: dict[str, Any]) -> str:
            run["phase"] = "done"
            run.setdefault("timings", {})["done"] = time.time()
            if outcome.reason:
                rec["FailureReason"] = outcome.reason[: contract.FAILURE_REASON_MAX]
            self.job.complete(rec, outcome)
            return records.set_status(self.kind, rec, outcome.status, end)

        self._mutate(complete)
        self.ctx.job_ended(self.kind, self.name)
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
        # In a cluster, which machine it ran on, and what the runtime knows of its end (a
        # node lost): a reason a person can act on.
        where = f" on node {final['node']}" if final.get("node") else ""
        why = f" ({final['error']})" if final.get("error") else ""
        head = (f"AlgorithmError: the container of {host}{where} exited with code "
                f"{final['exit_code']}{why} and wrote no /opt/ml/output/failure. "
                "Last log lines:\n")
        room = contract.FAILURE_REASON_MAX - len(head)
        return records.FAILED, head + (tail[-room:] if room > 0 else "")

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
            self.job.failed_early(rec, reason, at)
            return records.set_status(self.kind, rec, records.FAILED, at)

        self._mutate(fail)
        self.ctx.job_ended(self.kind, self.name)
        for cname in runner.get("containers", {}).values():
            try:
                self.ctx.runtime.remove(cname)
            except ShipyardError:
                pass
        if runner.get("job_dir"):
            self._cleanup({"network": runner.get("network")}, Path(runner["job_dir"]))
