"""Drives one hyperparameter tuning job: asks the search for trials, runs each as an ordinary
training job, reads its objective from the metric stream, tells the search, and stops.

Every trial is accepted as a CreateTrainingJob is (``jobs.accept``) and driven by a training
job supervisor on a thread of this runner; it carries ``TuningJobArn``. Before a trial's job
is created its number, name and hyperparameters are written to the tuning job's runner state,
so a runner that starts again (a server restart) rebuilds the search from what is stored,
re-creates a trial that was chosen but not yet created, watches the ones in flight (the
plane's reconcile gives them supervisors) and never runs one twice.

Early stopping (``TrainingJobEarlyStoppingType: Auto``, and Hyperband) reads each running
trial's objective series as the supervisor stores it: the n-th value of the objective metric
is step n. A trial the search prunes is stopped as StopTrainingJob stops one (SIGTERM, then
SIGKILL after the grace period); its last value is its objective, as AWS counts it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any

from shipyard import kinds
from shipyard.control.context import Context
from shipyard.control.jobs.accept import accept
from shipyard.control.jobs.training import TrainingJobs
from shipyard.control.state import records
from shipyard.control.tuning import request as tuning_request
from shipyard.control.tuning.request import Definition
from shipyard.control.tuning.search import PastTrial, Search, make_search
from shipyard.control.tuning.trials import Trial, trial_summary
from shipyard.errors import ResourceNotFound, ShipyardError, ValidationError

log = logging.getLogger(__name__)

TUNING, TRAINING = kinds.TUNING.key, kinds.TRAINING.key
POLL_SECONDS = 0.5
#: Trials that fail for the platform's reasons, not the user's, are run again up to this
#: many times in all (``RetryStrategy.MaximumRetryAttempts`` of the definition overrides).
DEFAULT_ATTEMPTS = 1
_PLATFORM_FAILURE = "InternalServerError"
_TRAINING_JOBS = TrainingJobs()
#: How long a trial that reached Hyperband's MaxResource may take to end by itself.
FULL_GRACE_SECONDS = 30.0
#: ConvergenceDetected: how many trials the best must hold, and by how little it may move.
CONVERGENCE_WINDOW = 10
CONVERGENCE_TOLERANCE = 1e-3


@dataclass
class _Progress:
    launched: int = 0
    exhausted: set[int] = field(default_factory=set)
    not_improving: int = 0
    best: float | None = None
    #: The best objective after each trial judged, in order (convergence reads it).
    bests: list[float] = field(default_factory=list)
    completion: str | None = None
    converged_at: float | None = None


class Tuner:
    """The runner of one tuning job (``shipyard.control.jobs.kind.Runner``)."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.finishing = threading.Event()
        self._threads: list[threading.Thread] = []
        #: The parents' best trials, when a warm start's data and algorithm are the same.
        self.parent_bests: list[dict[str, Any]] = []
        #: Hyperband's MaxResource, by definition: the steps a trial runs at most.
        self.max_steps: dict[int, int] = {}
        #: Set by a trial's supervisor thread when it ends.
        self._ended = threading.Event()
        #: The trials as last written to the runner state.
        self._saved: list[dict[str, Any]] | None = None

    def run(self) -> bool:
        lock = self.ctx.job_lock(TUNING, self.name)
        if not lock.acquire():
            return False
        try:
            row = self.ctx.store.get_job(TUNING, self.name)
            if row.status in records.TERMINAL_STATUSES:
                return True
            try:
                self._drive()
            except ShipyardError as exc:
                self._abandon(str(exc))
            except Exception as exc:
                log.error("tuner of %s crashed:\n%s", self.name, traceback.format_exc())
                self._abandon(f"InternalServerError: {type(exc).__name__}: {exc}")
            return True
        finally:
            lock.release()

    # -- the loop ---------------------------------------------------------------------------
    def _drive(self) -> None:
        row = self.ctx.store.get_job(TUNING, self.name)
        record = row.record
        req = tuning_request.request_of(record)
        self.definitions = tuning_request.definitions(req)
        config = record["HyperParameterTuningJobConfig"]
        self.config = config
        trials = [Trial.from_state(t) for t in row.runner.get("trials", [])]
        self.searches = self._searches(config, trials, record)
        self.parent_bests = _parent_bests(self.ctx, record)
        progress = _Progress(launched=len(trials))
        limits = config["ResourceLimits"]
        max_jobs = int(limits.get("MaxNumberOfTrainingJobs") or 0)
        parallel = int(limits["MaxParallelTrainingJobs"])
        max_runtime = limits.get("MaxRuntimeInSeconds")
        started = float(record["CreationTime"])
        for trial in trials:
            if trial.state == "pending":
                self._create(trial)
            elif trial.value is not None:
                # What the completion criteria had seen before a restart, seen again.
                self._judge(trial.value, self.definitions[trial.definition], progress)
        while True:
            row = self.ctx.store.get_job(TUNING, self.name)
            stopping = row.stop_requested or row.status == records.STOPPING
            for trial in trials:
                if trial.state == "running":
                    self._watch(trial, progress)
            self._save(trials)
            over_time = max_runtime is not None and time.time() - started > float(max_runtime)
            running = [t for t in trials if t.state == "running"]
            if stopping or over_time:
                for trial in running:
                    self._stop_trial(trial.name)
                if not running:
                    if stopping:
                        self._end(records.STOPPED, None, trials)
                    else:
                        self._finish(trials, progress, f"The tuning job reached "
                                     f"MaxRuntimeInSeconds ({max_runtime} s).")
                    return
            elif progress.completion is None:
                while len(running) < parallel and progress.launched < max_jobs:
                    chosen = self._next(trials, progress)
                    if chosen is None:
                        break
                    trials.append(chosen)
                    self._save(trials)
                    self._create(chosen)
                    running.append(chosen)
                    progress.launched += 1
            if not running and not stopping and not over_time and (
                    progress.completion is not None or progress.launched >= max_jobs
                    or len(progress.exhausted) == len(self.searches)):
                self._finish(trials, progress)
                return
            self._update(trials, progress)
            # A trial that ends wakes the loop at once: its slot is filled without a poll's wait.
            self._ended.wait(POLL_SECONDS)
            self._ended.clear()

    def _searches(self, config: dict[str, Any], trials: list[Trial],
                  record: dict[str, Any]) -> list[Search]:
        band = (config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig") or {}
        warm = _warm_start_trials(self.ctx, record)
        searches = []
        for index, definition in enumerate(self.definitions):
            hyperband = None
            if config["Strategy"] == "Hyperband":
                hyperband = (int(band.get("MinResource") or 1),
                             tuning_request.max_resource(config, definition))
                self.max_steps[index] = hyperband[1]
            # With their curves: early stopping compares a trial with the others' steps.
            history = [PastTrial(t.search_number, t.params, _past_state(t), t.value,
                                 self._steps(t.name, definition.metric))
                       for t in trials if t.definition == index]
            searches.append(make_search(
                config["Strategy"], definition.ranges, minimize=definition.minimize,
                seed=config.get("RandomSeed"),
                early_stopping=config.get("TrainingJobEarlyStoppingType", "Off"),
                hyperband=hyperband, history=history,
                warm_start=warm.get(definition.name, warm.get(None, [])),
                budget=config["ResourceLimits"].get("MaxNumberOfTrainingJobs")))
        return searches

    def _steps(self, trial: str, metric: str) -> list[tuple[int, float]]:
        series = self.ctx.store.metric_series(TRAINING, trial, metric)
        return [(step, value) for step, (_, _, value, _) in enumerate(series, 1)]

    def _next(self, trials: list[Trial], progress: _Progress) -> Trial | None:
        """The next trial: definitions in turn, skipping those whose search has no more."""
        count = len(self.definitions)
        for offset in range(count):
            index = (progress.launched + offset) % count
            if index in progress.exhausted:
                continue
            asked = self.searches[index].ask()
            if asked is None:
                progress.exhausted.add(index)
                continue
            search_number, params = asked
            number = len(trials)
            return Trial(number, index, search_number,
                         f"{self.name}-{number + 1:03d}-{uuid.uuid4().hex[:8]}", params)
        return None

    def _create(self, trial: Trial) -> None:
        """Create the trial's training job (once: a job already there is the trial's) and
        drive it from a thread of this runner."""
        definition = self.definitions[trial.definition]
        request = tuning_request.trial_request(self.name, definition,
                                               trial.name.removeprefix(f"{self.name}-"),
                                               trial.params)
        arn = kinds.TUNING.arn(self.name, self.ctx.settings.region,
                               self.ctx.settings.account_id)
        extra: dict[str, Any] = {"TuningJobArn": arn}
        try:
            accept(self.ctx, _TRAINING_JOBS, request, self._describe, record_extra=extra)
        except ShipyardError as exc:
            if self._exists(trial.name):
                trial.state = "running"
                return
            if isinstance(exc, ValidationError):
                # The definition was checked when the tuning job was made: this is a trial
                # the host refused (its image went away, its data was deleted).
                trial.state, trial.value = "failed", None
                self.searches[trial.definition].tell(trial.search_number, "failed", None)
                log.warning("trial %s of %s refused: %s", trial.name, self.name, exc)
                return
            raise
        trial.state = "running"
        runner = _TRAINING_JOBS.runner(self.ctx, trial.name)

        def drive() -> None:
            try:
                runner.run()
            finally:
                self._ended.set()

        thread = threading.Thread(target=drive, name=f"trial-{trial.name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watch(self, trial: Trial, progress: _Progress) -> None:
        """Read a running trial: early stopping on its new steps, its end once it ends."""
        try:
            row = self.ctx.store.get_job(TRAINING, trial.name)
        except ResourceNotFound:
            return
        definition = self.definitions[trial.definition]
        search = self.searches[trial.definition]
        series = [v for _, _, v, _ in self.ctx.store.metric_series(
            TRAINING, trial.name, definition.metric)]
        ended = row.status in records.TERMINAL_STATUSES
        # Every step is reported, a finished trial's too: the others are judged against them.
        full = self.max_steps.get(trial.definition)
        for step in range(trial.steps_seen, len(series)):
            point = series[step]
            trial.steps_seen = step + 1
            stop = search.report(trial.search_number, step + 1, point)
            if full is not None and step + 1 >= full:
                # Hyperband's MaxResource: the trial ran in full. It may still be saving its
                # model: it gets FULL_GRACE_SECONDS to end by itself before it is stopped.
                trial.full_at = trial.full_at or time.time()
            elif stop and not (ended or trial.pruned):
                trial.pruned = True
                log.info("early stopping trial %s of %s at step %d (%s = %s)",
                         trial.name, self.name, step + 1, definition.metric, point)
                self._stop_trial(trial.name)
        if not ended:
            if trial.full_at and time.time() - trial.full_at > FULL_GRACE_SECONDS:
                self._stop_trial(trial.name)
            return
        value = series[-1] if series else None
        if row.status == records.COMPLETED and value is None:
            self._objective_missing(trial.name, definition)
        if value is not None and not math.isfinite(value):
            value = None
        if row.status == records.FAILED and str(row.record.get("FailureReason", "")).startswith(
                _PLATFORM_FAILURE) and trial.attempt < self._attempts(definition):
            # A platform failure: the same hyperparameters again, as a new training job.
            trial.state = "pending"
            trial.attempt += 1
            trial.name = f"{self.name}-{trial.number + 1:03d}-{uuid.uuid4().hex[:8]}"
            self._create(trial)
            return
        state = "pruned" if trial.pruned and value is not None else (
            "complete" if value is not None else "failed")
        trial.state, trial.value = state, value
        search.tell(trial.search_number, state, value)
        if value is not None:
            self._judge(value, definition, progress)

    def _judge(self, value: float, definition: Definition, progress: _Progress) -> None:
        """TuningJobCompletionCriteria, after each trial that has an objective."""
        better = progress.best is None or (
            value < progress.best if definition.minimize else value > progress.best)
        if better:
            progress.best, progress.not_improving = value, 0
        else:
            progress.not_improving += 1
        criteria = self.config.get("TuningJobCompletionCriteria") or {}
        target = criteria.get("TargetObjectiveMetricValue")
        if target is not None and (value <= target if definition.minimize else value >= target):
            progress.completion = "TargetObjectiveMetricValue"
        patience = (criteria.get("BestObjectiveNotImproving") or {}).get(
            "MaxNumberOfTrainingJobsNotImproving")
        if patience is not None and progress.not_improving >= int(patience):
            progress.completion = "BestObjectiveNotImproving"
        progress.bests.append(value if progress.best is None else progress.best)
        convergence = (criteria.get("ConvergenceDetected") or {}).get("CompleteOnConvergence")
        if convergence == "Enabled" and _converged(progress.bests):
            progress.completion = "ConvergenceDetected"
            progress.converged_at = records.now()

    def _attempts(self, definition: Definition) -> int:
        retry = definition.body.get("RetryStrategy") or {}
        return int(retry.get("MaximumRetryAttempts") or DEFAULT_ATTEMPTS)

    def _objective_missing(self, name: str, definition: Definition) -> None:
        """A trial that completed without its objective failed, as a tuning job sees it."""
        regex = next((m.get("Regex") for m in definition.body["AlgorithmSpecification"].get(
            "MetricDefinitions") or [] if m.get("Name") == definition.metric), "")
        reason = (f"The objective metric {definition.metric!r} was never emitted: no line of "
                  f"the training log matched its regex {regex!r}.")
        at = records.now()

        def fail(rec: dict[str, Any], run: dict[str, Any]) -> str:
            rec["FailureReason"] = reason
            return records.set_status(TRAINING, rec, records.FAILED, at)

        self.ctx.store.mutate(TRAINING, name, fail)
        self.ctx.job_ended(TRAINING, name)

    def _stop_trial(self, name: str) -> None:
        at = records.now()

        def stopping(rec: dict[str, Any], run: dict[str, Any]) -> str | None:
            if records.status_of(TRAINING, rec) != records.IN_PROGRESS:
                return None
            _TRAINING_JOBS.transition(rec, "Stopping", "Stopping the training job", at)
            return records.set_status(TRAINING, rec, records.STOPPING, at)

        try:
            self.ctx.store.mutate(TRAINING, name, stopping)
        except ResourceNotFound:
            return
        self.ctx.store.request_stop(TRAINING, name)

    def _abandon(self, reason: str) -> None:
        """The tuning job fails: its trials still running are stopped, not left behind."""
        row = self.ctx.store.get_job(TUNING, self.name)
        for data in row.runner.get("trials", []):
            self._stop_trial(Trial.from_state(data).name)
        self._end(records.FAILED, reason)

    # -- the record -------------------------------------------------------------------------
    def _save(self, trials: list[Trial]) -> None:
        states = [t.to_state() for t in trials]
        if states == self._saved:
            return  # polled every half second: write only what changed
        self._saved = states

        def save(rec: dict[str, Any], run: dict[str, Any]) -> None:
            run["trials"] = states
            run["phase"] = "running"

        self.ctx.store.mutate(TUNING, self.name, save)

    def _update(self, trials: list[Trial], progress: _Progress) -> None:
        summary = self._summary(trials)

        def update(rec: dict[str, Any], run: dict[str, Any]) -> None:
            changed = {k: v for k, v in summary.items() if rec.get(k) != v}
            if changed:
                rec.update(changed)
                rec["LastModifiedTime"] = records.now()

        self.ctx.store.mutate(TUNING, self.name, update)

    def _summary(self, trials: list[Trial]) -> dict[str, Any]:
        """Counters, the best trial and the resources used, from the trials' records."""
        counters = {"Completed": 0, "InProgress": 0, "RetryableError": 0,
                    "NonRetryableError": 0, "Stopped": 0}
        objectives = {"Succeeded": 0, "Pending": 0, "Failed": 0}
        best: tuple[float, dict[str, Any]] | None = None
        for trial in trials:
            if trial.state == "pending":
                continue
            try:
                record = self.ctx.store.get_job(TRAINING, trial.name).record
            except ResourceNotFound:
                continue
            status = record["TrainingJobStatus"]
            if status in (records.IN_PROGRESS, records.STOPPING):
                counters["InProgress"] += 1
                objectives["Pending"] += 1
                continue
            if status == records.COMPLETED:
                counters["Completed"] += 1
            elif status == records.STOPPED:
                counters["Stopped"] += 1
            elif str(record.get("FailureReason", "")).startswith(_PLATFORM_FAILURE):
                counters["RetryableError"] += 1
            else:
                counters["NonRetryableError"] += 1
            if trial.value is None:
                objectives["Failed" if trial.state != "running" else "Pending"] += 1
                continue
            objectives["Succeeded"] += 1
            definition = self.definitions[trial.definition]
            key = trial.value if definition.minimize else -trial.value
            if best is None or key < best[0]:
                best = (key, trial_summary(self.name, trial, record, definition))
        summary: dict[str, Any] = {"TrainingJobStatusCounters": counters,
                                   "ObjectiveStatusCounters": objectives}
        if best is not None:
            summary["BestTrainingJob"] = best[1]
        overall = [s for s in [best[1] if best else None, *self.parent_bests] if s]
        if self.parent_bests and overall:
            minimize = self.definitions[0].minimize
            summary["OverallBestTrainingJob"] = min(overall, key=lambda s: (
                1 if minimize else -1) * s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
        return summary

    def _finish(self, trials: list[Trial], progress: _Progress, note: str | None = None
                ) -> None:
        """Completed when a trial gave an objective, else Failed; ``note``: why the search
        ended early (MaxRuntimeInSeconds), kept as the job's FailureReason either way."""
        summary = self._summary(trials)
        if summary["ObjectiveStatusCounters"]["Succeeded"] == 0:
            count = sum(1 for t in trials if t.state != "pending")
            reason = (f"No training job succeeded after {count} attempts. For additional "
                      "details, please take a look at the training job failures by listing "
                      "training jobs for the hyperparameter tuning job.")
            self._end(records.FAILED, f"{note} {reason}" if note else reason, trials)
            return
        self._end(records.COMPLETED, note, trials, progress)

    def _end(self, status: str, reason: str | None, trials: list[Trial] | None = None,
             progress: _Progress | None = None) -> None:
        self.finishing.set()
        summary = self._summary(trials) if trials is not None else {}
        at = records.now()

        def end(rec: dict[str, Any], run: dict[str, Any]) -> str:
            rec.update(summary)
            if reason:
                rec["FailureReason"] = reason
            rec["HyperParameterTuningEndTime"] = at
            rec["ConsumedResources"] = {
                "RuntimeInSeconds": int(at - float(rec["CreationTime"]))}
            if progress is not None and progress.completion is not None:
                details: dict[str, Any] = {
                    "NumberOfTrainingJobsObjectiveNotImproving": progress.not_improving}
                if progress.converged_at is not None:
                    details["ConvergenceDetectedTime"] = progress.converged_at
                rec["TuningJobCompletionDetails"] = details
            return records.set_status(TUNING, rec, status, at)

        self.ctx.store.mutate(TUNING, self.name, end)
        self.ctx.job_ended(TUNING, self.name)

    def _exists(self, name: str) -> bool:
        try:
            self.ctx.store.get_job(TRAINING, name)
        except ResourceNotFound:
            return False
        return True

    def _describe(self, kind: str, name: str) -> dict[str, Any]:
        return self.ctx.store.get_job(kind, name).record


def _parent_bests(ctx: Context, record: dict[str, Any]) -> list[dict[str, Any]]:
    """``OverallBestTrainingJob`` compares this job's best with its parents' only for an
    ``IdenticalDataAndAlgorithm`` warm start: with other data the values do not compare."""
    config = record.get("WarmStartConfig") or {}
    if config.get("WarmStartType") != "IdenticalDataAndAlgorithm":
        return []
    found = []
    for parent in config.get("ParentHyperParameterTuningJobs") or []:
        try:
            rec = ctx.store.get_job(TUNING, parent["HyperParameterTuningJobName"]).record
        except ResourceNotFound:
            continue
        best = rec.get("OverallBestTrainingJob") or rec.get("BestTrainingJob")
        if best and "FinalHyperParameterTuningJobObjectiveMetric" in best:
            found.append(best)
    return found


def _converged(bests: list[float]) -> bool:
    """``ConvergenceDetected``: AWS does not say how it decides. Shipyard's rule: the best
    objective moved by less than ``CONVERGENCE_TOLERANCE`` (relative) over the last
    ``CONVERGENCE_WINDOW`` trials that had an objective."""
    if len(bests) <= CONVERGENCE_WINDOW:
        return False
    before, now = bests[-1 - CONVERGENCE_WINDOW], bests[-1]
    return abs(now - before) <= CONVERGENCE_TOLERANCE * max(abs(before), 1e-12)


def _past_state(trial: Trial) -> str:
    return "running" if trial.state == "pending" else trial.state


def _warm_start_trials(ctx: Context, record: dict[str, Any]) -> dict[str | None, list[PastTrial]]:
    """The parents' finished trials by definition name, to seed the searches."""
    config = record.get("WarmStartConfig") or {}
    found: dict[str | None, list[PastTrial]] = {}
    for parent in config.get("ParentHyperParameterTuningJobs") or []:
        try:
            row = ctx.store.get_job(TUNING, parent["HyperParameterTuningJobName"])
        except ResourceNotFound:
            continue
        definitions = tuning_request.definitions(tuning_request.request_of(row.record))
        for data in row.runner.get("trials", []):
            trial = Trial.from_state(data)
            if trial.state not in ("complete", "pruned", "failed"):
                continue
            name = definitions[trial.definition].name
            found.setdefault(name, []).append(
                PastTrial(trial.search_number, trial.params, trial.state, trial.value))
    return found
