"""The search engine of a tuning job: the hyperparameters each trial gets, and whether a
running trial should stop early. Pure (no I/O, no threads, no clock) and, given a seed and
the same sequence of calls, deterministic. Built on Optuna's ask-and-tell interface; the
runner drives it through :class:`Search`, so another engine (a GP sampler) can come later.

Strategies (``HyperParameterTuningJobConfig.Strategy``):

- ``Random``: Optuna's ``RandomSampler(seed)``: "the choice of hyperparameters does not depend
  on the results of previous runs".
- ``Bayesian``: ``TPESampler(seed, multivariate=True, constant_liar=True)``. Trials run in
  parallel ask before earlier ones are told; the constant liar counts the running ones as
  bad results so parallel asks spread out. Its first trials are random: a quarter of the
  budget, 4 to 10 (``startup_trials``; AWS does not say how its Bayesian search starts);
  warm-start trials count toward them.
- ``Grid``: every combination of the categorical values once, in ``itertools.product``
  order, or in a seeded pseudo-random permutation when a seed is given (computed lazily: a
  grid can have 30**30 points). ``ask`` returns ``None`` once the grid is done. Warm start
  does not change a grid: it runs in full.
- ``Hyperband``: Optuna's ``HyperbandPruner(min_resource, max_resource, reduction_factor=3)``
  (3, the η of Li et al., is Optuna's default; AWS does not publish its own) with the
  Bayesian sampler. A step is a resource unit (an epoch: the runner numbers a trial's
  objective values 1, 2, ...). ``report`` answers True at ``MaxResource``: "Once a job
  reaches the MaxResource value, it is stopped"; such a trial told ``"pruned"`` is recorded
  as complete, since it ran in full.

Early stopping ``Auto`` (any strategy but Hyperband) follows AWS's documented rule, which
Optuna's ``MedianPruner`` does not: after each step, compute the running average of the
objective up to that step for each previous trial, take their median, and stop the current
trial when its value at that step is worse. Optuna's compares the trial's *best* value so far
with the median of other trials' values *at* the step. Shipyard's reading: "previous" trials
are those of this tuning job that have ended (complete or stopped early) and reached the
step ("unlikely to perform better than previously completed training jobs", API reference);
a decision needs at least 3 of them (AWS states no minimum; with one or two, a single bad
early trial would decide); there are no warm-up steps, as AWS checks "after each epoch".

After a restart the runner rebuilds a search from its trials (``history``): they are
replayed into the study (steps through the pruner too, so Hyperband keeps its rungs), running
ones wait for their ``tell``, and numbers go on after the highest. A grid goes on in the same
order, skipping every point already handed out; a sampler draws from a seed derived from the
job's seed and the trial count, so it does not draw the first trials' values again and stays
repeatable.

Values: a ``NaN`` or infinite final value makes the trial failed; a non-finite step value is
not recorded and stops nothing. ``ReverseLogarithmic`` ranges (``0 <= x < 1``) are searched
as ``u = 1 - x`` on a log scale, so values crowd near 1.

A lock serialises each search's calls: the runner may call it from more than one thread.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from shipyard.control.tuning.ranges import (
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    Range,
    Value,
    decode,
    encode,
    grid_size,
)

__all__ = [
    "EARLY_STOPPING_MIN_TRIALS",
    "HYPERBAND_REDUCTION_FACTOR",
    "STATES",
    "STRATEGIES",
    "PastTrial",
    "Search",
    "make_search",
]

STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")
#: A trial's state as the runner tells it (``"running"`` only in history).
STATES = ("complete", "failed", "pruned", "running")
HYPERBAND_REDUCTION_FACTOR = 3
#: Bounds of Bayesian search's random start (``startup_trials``).
MIN_STARTUP_TRIALS, MAX_STARTUP_TRIALS = 4, 10
#: Ended trials that must have reached a step before ``Auto`` early stopping judges it.
EARLY_STOPPING_MIN_TRIALS = 3

# Hyperband assigns brackets by a hash of the study's name and the trial's number: a fixed
# name keeps a seeded search repeatable (Optuna's default name is a random UUID).
_STUDY_NAME = "shipyard-tuning"
# Marks the trials of this tuning job (warm-start trials have none) with their number.
_NUMBER = "shipyard_number"


@dataclass(frozen=True)
class PastTrial:
    """What the runner stored about a trial: to rebuild a search after a restart
    (``history``) or to seed one (``warm_start``)."""

    #: 0-based trial index within its search.
    number: int
    #: Encoded hyperparameter strings, as given to the trial.
    params: Mapping[str, str]
    #: One of :data:`STATES`.
    state: str
    #: The final objective (``None`` unless complete or pruned with a value).
    value: float | None = None
    #: Objective values seen so far, ``(step, value)``.
    steps: Sequence[tuple[int, float]] = ()


class Search(Protocol):
    """What the tuning runner asks of a search engine."""

    def ask(self) -> tuple[int, dict[str, str]] | None:
        """The next trial's number and encoded hyperparameters; ``None`` when the search has
        nothing left (a finished grid)."""
        ...

    def tell(self, number: int, state: str, value: float | None) -> None:
        """Trial ``number`` ended: ``"complete"``, ``"failed"`` or ``"pruned"``."""
        ...

    def report(self, number: int, step: int, value: float) -> bool:
        """Trial ``number`` reached ``step`` with ``value``; True: stop it now."""
        ...


def startup_trials(budget: int | None) -> int:
    """Bayesian search's random start: a quarter of the budget, 4 to 10 trials (Optuna's
    default is 10 whatever the budget, half of a 20-trial job; with 5 of 20 the median best
    Branin value over 50 seeds fell from 1.69 to 1.28, benchmarks/tuning.py)."""
    if budget is None:
        return MAX_STARTUP_TRIALS
    return max(MIN_STARTUP_TRIALS, min(MAX_STARTUP_TRIALS, budget // 4))


def make_search(strategy: str, ranges: Sequence[Range], *, minimize: bool, seed: int | None,
                early_stopping: str = "Off", hyperband: tuple[int, int] | None = None,
                history: Sequence[PastTrial] = (),
                warm_start: Sequence[PastTrial] = (), budget: int | None = None) -> Search:
    """A search over ``ranges`` for ``strategy`` (one of :data:`STRATEGIES`).

    ``hyperband`` is ``(MinResource, MaxResource)``, required by Hyperband and refused by
    the others, as is ``early_stopping="Auto"`` with Hyperband. ``history`` holds this
    search's own trials (after a restart): finished ones are replayed into the study, running
    ones wait for their ``tell``, none is asked again, and numbering continues after the
    highest. ``warm_start`` holds parent jobs' trials: the complete ones (and those stopped
    early, with their last value) whose hyperparameters lie within ``ranges`` seed the
    sampler; they take no number. Raises ``ValueError`` for arguments the request checks
    should have refused, or a history that does not fit ``ranges``. ``budget``: the trials
    the job may run (MaxNumberOfTrainingJobs), which sizes Bayesian's random start.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    if early_stopping not in ("Off", "Auto"):
        raise ValueError(f"unknown early stopping type {early_stopping!r}")
    if (strategy == "Hyperband") != (hyperband is not None):
        raise ValueError("hyperband=(min_resource, max_resource) goes with Hyperband only")
    if strategy == "Hyperband" and early_stopping != "Off":
        raise ValueError("Hyperband stops trials itself: early stopping must be Off")
    if hyperband is not None and not 1 <= hyperband[0] <= hyperband[1]:
        raise ValueError(f"bad Hyperband resources {hyperband}")
    # At use, not import: Optuna logs every trial at INFO, which would flood the server log.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler_seed = seed
    if seed is not None and history:
        # A rebuilt sampler seeded as the first one was would draw the first trials' values
        # again: derive its seed from how far the search got instead.
        sampler_seed = (seed * 1_000_003 + max(p.number for p in history) + 1) % 2**32
    sampler: optuna.samplers.BaseSampler
    if strategy in ("Bayesian", "Hyperband"):
        sampler = optuna.samplers.TPESampler(seed=sampler_seed, multivariate=True,
                                             constant_liar=True,
                                             n_startup_trials=startup_trials(budget))
    else:
        sampler = optuna.samplers.RandomSampler(seed=sampler_seed)
    pruner: optuna.pruners.BasePruner
    if hyperband is not None:
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=hyperband[0], max_resource=hyperband[1],
            reduction_factor=HYPERBAND_REDUCTION_FACTOR)
    elif early_stopping == "Auto":
        pruner = _RunningAverageMedianPruner(EARLY_STOPPING_MIN_TRIALS)
    else:
        pruner = optuna.pruners.NopPruner()
    study = optuna.create_study(study_name=_STUDY_NAME, sampler=sampler, pruner=pruner,
                                direction="minimize" if minimize else "maximize")
    grid = _Grid(ranges, seed) if strategy == "Grid" else None
    search = _OptunaSearch(study, ranges, grid=grid,
                           prunes=hyperband is not None or early_stopping == "Auto",
                           max_resource=hyperband[1] if hyperband is not None else None)
    if grid is None:
        for past in warm_start:
            search.seed_with(past)
    search.replay(history)
    return search


# ----------------------------------------------------------------------- the engine


class _OptunaSearch:
    def __init__(self, study: optuna.Study, ranges: Sequence[Range], *, grid: _Grid | None,
                 prunes: bool, max_resource: int | None) -> None:
        self._study = study
        self._ranges = list(ranges)
        self._distributions = {r.name: _distribution(r) for r in self._ranges}
        self._grid = grid
        self._prunes = prunes
        self._max_resource = max_resource
        self._running: dict[int, optuna.Trial] = {}
        self._reported: dict[int, dict[int, float]] = {}
        self._next = 0
        self._lock = threading.Lock()

    # -- Search ------------------------------------------------------------------------------
    def ask(self) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            number = self._next
            if self._grid is not None:
                point = self._grid.next_point()
                if point is None:
                    return None
                trial = self._start(number, point)
            else:
                trial = self._study.ask(self._distributions)
                trial.set_user_attr(_NUMBER, number)
                self._running[number] = trial
            self._next = number + 1
            return number, {r.name: encode(r, _external(r, trial.params[r.name]))
                            for r in self._ranges}

    def tell(self, number: int, state: str, value: float | None) -> None:
        if state not in ("complete", "failed", "pruned"):
            raise ValueError(f"trial {number}: cannot tell state {state!r}")
        with self._lock:
            trial = self._running.pop(number, None)
            if trial is None:
                raise ValueError(f"trial {number} is not running")
            self._finish(number, trial, state, value)

    def report(self, number: int, step: int, value: float) -> bool:
        with self._lock:
            trial = self._running.get(number)
            if trial is None:
                raise ValueError(f"trial {number} is not running")
            return self._report(number, trial, step, value)

    # -- building ----------------------------------------------------------------------------
    def seed_with(self, past: PastTrial) -> None:
        """Add a parent job's trial as a finished one that takes no number."""
        if past.state not in ("complete", "pruned"):
            return
        if past.value is None or not math.isfinite(past.value):
            return
        try:
            params = self._internal(past.params)
        except ValueError:
            # TransferLearning may change the ranges: a parent's trial outside them says
            # nothing the sampler can use.
            return
        self._study.add_trial(optuna.trial.create_trial(
            params=params, distributions=self._distributions, value=past.value))

    def replay(self, history: Sequence[PastTrial]) -> None:
        """Put this search's own past trials back, in number order."""
        numbers = [p.number for p in history]
        if len(set(numbers)) != len(numbers):
            raise ValueError("two past trials share a number")
        for past in sorted(history, key=lambda p: p.number):
            if past.state not in STATES:
                raise ValueError(f"trial {past.number}: unknown state {past.state!r}")
            try:
                params = self._internal(past.params)
            except ValueError as exc:
                raise ValueError(f"trial {past.number} does not fit the ranges: {exc}") from exc
            if self._grid is not None:
                self._grid.exclude(params)
            trial = self._start(past.number, params)
            for step, value in past.steps:
                # Replayed through the pruner too: Hyperband records each trial's rungs then.
                self._report(past.number, trial, step, value)
            if past.state != "running":
                del self._running[past.number]
                self._finish(past.number, trial, past.state, past.value)
        self._next = max(numbers, default=-1) + 1

    # -- inside ------------------------------------------------------------------------------
    def _start(self, number: int, params: dict[str, Value]) -> optuna.Trial:
        """A running trial with ``params`` fixed: a grid point or a trial replayed."""
        self._study.enqueue_trial(params, user_attrs={_NUMBER: number})
        trial = self._study.ask(self._distributions)
        self._running[number] = trial
        return trial

    def _report(self, number: int, trial: optuna.Trial, step: int, value: float) -> bool:
        seen = self._reported.setdefault(number, {})
        if step < 0 or step in seen or not math.isfinite(value):
            return False
        seen[step] = value
        trial.report(value, step)
        if self._max_resource is not None and step >= self._max_resource:
            return True
        return self._prunes and trial.should_prune()

    def _finish(self, number: int, trial: optuna.Trial, state: str,
                value: float | None) -> None:
        steps = self._reported.pop(number, {})
        if state == "pruned" and self._max_resource is not None and steps and (
                max(steps) >= self._max_resource):
            # Stopped at MaxResource by Hyperband: it ran in full.
            state = "complete"
            if value is None or not math.isfinite(value):
                value = steps[max(steps)]
        if state == "complete" and value is not None and math.isfinite(value):
            self._study.tell(trial, value)
        elif state == "pruned":
            # Optuna takes the last reported value as a pruned trial's value.
            self._study.tell(trial, state=TrialState.PRUNED)
        elif state in ("complete", "failed"):
            self._study.tell(trial, state=TrialState.FAIL)
        else:
            raise ValueError(f"trial {number}: cannot tell state {state!r}")

    def _internal(self, params: Mapping[str, str]) -> dict[str, Value]:
        """Encoded hyperparameters as Optuna's parameter values; ``ValueError`` when they do
        not fit the ranges."""
        found: dict[str, Value] = {}
        for r in self._ranges:
            if r.name not in params:
                raise ValueError(f"no value for {r.name}")
            found[r.name] = _internal(r, decode(r, params[r.name]))
        return found


# ---------------------------------------------------------------------- ranges <-> Optuna


def _distribution(r: Range) -> BaseDistribution:
    if isinstance(r, CategoricalRange):
        return CategoricalDistribution(r.values)
    if isinstance(r, IntegerRange):
        return IntDistribution(r.min_value, r.max_value, log=r.scaling == "Logarithmic")
    if r.scaling == "ReverseLogarithmic":
        low, high = _reversed(r)
        return FloatDistribution(low, high, log=True)
    return FloatDistribution(r.min_value, r.max_value, log=r.scaling == "Logarithmic")


def _reversed(r: ContinuousRange) -> tuple[float, float]:
    # 0 <= min <= max < 1, so 0 < 1 - max <= 1 - min <= 1: a log scale fits.
    return 1.0 - r.max_value, 1.0 - r.min_value


def _external(r: Range, value: object) -> Value:
    """An Optuna parameter value as a value of ``r``."""
    if isinstance(r, CategoricalRange):
        return str(value)
    if isinstance(r, IntegerRange):
        assert isinstance(value, int)
        return value
    assert isinstance(value, float)
    if r.scaling == "ReverseLogarithmic":
        value = 1.0 - value
    # 1 - (1 - x) is not always x in floating point: keep the value inside the range.
    return min(max(value, r.min_value), r.max_value)


def _internal(r: Range, value: Value) -> Value:
    """A value of ``r`` as Optuna's parameter value."""
    if isinstance(r, ContinuousRange) and r.scaling == "ReverseLogarithmic":
        assert isinstance(value, float)
        low, high = _reversed(r)
        return min(max(1.0 - value, low), high)
    return value


# ----------------------------------------------------------------------------- Grid


class _Grid:
    """The points of a categorical grid, each handed out once, in a fixed order."""

    def __init__(self, ranges: Sequence[Range], seed: int | None) -> None:
        self._ranges = [r for r in ranges if isinstance(r, CategoricalRange)]
        self._size = grid_size(ranges)
        self._order = _Permutation(self._size, seed) if seed is not None else None
        self._cursor = 0
        self._excluded: set[tuple[str, ...]] = set()

    def exclude(self, params: Mapping[str, Value]) -> None:
        """A point already asked (before a restart): never hand it out."""
        self._excluded.add(tuple(str(params[r.name]) for r in self._ranges))

    def next_point(self) -> dict[str, Value] | None:
        while self._cursor < self._size:
            index = self._cursor
            self._cursor += 1
            if self._order is not None:
                index = self._order(index)
            point = self._point(index)
            if point not in self._excluded:
                return {r.name: v for r, v in zip(self._ranges, point, strict=True)}
        return None

    def _point(self, index: int) -> tuple[str, ...]:
        # Mixed radix, the last range varying fastest (itertools.product's order).
        values: list[str] = []
        for r in reversed(self._ranges):
            index, digit = divmod(index, len(r.values))
            values.append(r.values[digit])
        return tuple(reversed(values))


class _Permutation:
    """A seeded pseudo-random permutation of ``range(size)``, one index at a time: a
    four-round Feistel network over the next even power of two, walking the cycle back into
    range (each step stays a bijection, so no index repeats)."""

    _ROUNDS = 4

    def __init__(self, size: int, seed: int) -> None:
        bits = max(2, (size - 1).bit_length())
        bits += bits % 2
        self._size = size
        self._half = bits // 2
        self._mask = (1 << self._half) - 1
        # A small deterministic generator (splitmix64): Python's ``random`` would do, but
        # its seeding of large ints is an implementation detail.
        state = seed & 0xFFFFFFFFFFFFFFFF
        self._keys: list[int] = []
        for _ in range(self._ROUNDS):
            state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
            self._keys.append(z ^ (z >> 31))

    def __call__(self, index: int) -> int:
        value = self._encrypt(index)
        while value >= self._size:
            value = self._encrypt(value)
        return value

    def _encrypt(self, value: int) -> int:
        left, right = value >> self._half, value & self._mask
        for key in self._keys:
            mixed = ((right ^ key) * 0x9E3779B97F4A7C15) >> 17
            left, right = right, left ^ (mixed & self._mask)
        return (left << self._half) | right


# ----------------------------------------------------------------- early stopping (Auto)


class _RunningAverageMedianPruner(optuna.pruners.BasePruner):
    """AWS's early-stopping rule (see the module's docstring) as an Optuna pruner."""

    def __init__(self, min_trials: int) -> None:
        self._min_trials = min_trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        averages = []
        for other in study.get_trials(deepcopy=False,
                                      states=(TrialState.COMPLETE, TrialState.PRUNED)):
            if _NUMBER not in other.user_attrs or step not in other.intermediate_values:
                continue
            upto = [v for s, v in other.intermediate_values.items() if s <= step]
            averages.append(sum(upto) / len(upto))
        if len(averages) < self._min_trials:
            return False
        median = statistics.median(averages)
        value = trial.intermediate_values[step]
        if study.direction == StudyDirection.MINIMIZE:
            return value > median
        return value < median
