"""The tuning search engine (``control.tuning.ranges`` and ``control.tuning.search``) on the
real Optuna: ranges checked in AWS's terms, each strategy, restarts from history, warm
start, early stopping by AWS's rule, Hyperband's rungs."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from typing import Any

import pytest

from shipyard.control.tuning.ranges import (
    GRID_ONLY_CATEGORICAL,
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    Range,
    check_enough_combinations,
    combinations,
    decode,
    encode,
    grid_size,
    parse_ranges,
    sample_value,
)
from shipyard.control.tuning.search import PastTrial, Search, make_search
from shipyard.errors import ValidationError


def _int(name: str, low: str, high: str, scaling: str | None = None) -> dict[str, str]:
    item = {"Name": name, "MinValue": low, "MaxValue": high}
    return item if scaling is None else {**item, "ScalingType": scaling}


def _cat(name: str, *values: str) -> dict[str, Any]:
    return {"Name": name, "Values": list(values)}


def _ranges(**kinds: list[dict[str, Any]]) -> dict[str, Any]:
    names = {"integer": "IntegerParameterRanges", "continuous": "ContinuousParameterRanges",
             "categorical": "CategoricalParameterRanges"}
    return {names[k]: v for k, v in kinds.items()}


# -- ranges: what AWS refuses -------------------------------------------------------------

@pytest.mark.parametrize(("request_ranges", "message"), [
    (_ranges(integer=[_int("n", "1.5", "3")]),
     r"^The MinValue \[1.5\] of the hyperparameter \[n\] is not an integer\.$"),
    (_ranges(integer=[_int("n", "1", "ten")]), r"MaxValue \[ten\] .* is not an integer"),
    (_ranges(continuous=[_int("lr", "abc", "1")]), r"MinValue \[abc\] .* is not a number"),
    (_ranges(continuous=[_int("lr", "nan", "1")]), r"MinValue \[nan\] .* is not a number"),
    (_ranges(continuous=[_int("lr", "0", "1e999")]), r"is not a finite number"),
    (_ranges(integer=[_int("n", "0", "1" + "0" * 400)]), r"outside the integers"),
    (_ranges(continuous=[_int("lr", " 1", "2")]), r"is not a number"),
    (_ranges(integer=[_int("n", "5", "3")]),
     r"^The MinValue \[5\] of the hyperparameter \[n\] is greater than its MaxValue \[3\]\.$"),
    (_ranges(continuous=[_int("lr", "0", "1", "Logarithmic")]),
     r"Logarithmic scaling works only for ranges that have only values greater than 0"),
    (_ranges(integer=[_int("n", "-2", "8", "Logarithmic")]),
     r"\[n\] has the range \[-2, 8\]: Logarithmic scaling works only"),
    (_ranges(integer=[_int("n", "0", "0", "ReverseLogarithmic")]),
     r"ReverseLogarithmic scaling is supported only for continuous hyperparameter ranges"),
    (_ranges(continuous=[_int("m", "0.5", "1", "ReverseLogarithmic")]),
     r"entirely within the range 0<=x<1.0"),
    (_ranges(continuous=[_int("m", "-0.1", "0.5", "ReverseLogarithmic")]),
     r"entirely within the range 0<=x<1.0"),
    (_ranges(continuous=[_int("m", "0", "1", "Squared")]), r"ScalingType .* not \[Squared\]"),
    (_ranges(integer=[_int("a", "1", "2")], continuous=[_int("a", "1", "2")]),
     r"^The hyperparameter \[a\] is specified in more than one hyperparameter range"),
    (_ranges(categorical=[_cat("a", "x"), _cat("a", "y")]), r"\[a\] is specified in more"),
    (_ranges(integer=[_int(f"n{i}", "1", "2") for i in range(31)]),
     r"^IntegerParameterRanges can hold at most 30 hyperparameter ranges; it holds 31\.$"),
    (_ranges(integer=[_int(f"n{i}", "1", "2") for i in range(15)],
             categorical=[_cat(f"c{i}", "x") for i in range(16)]),
     r"^The total number of hyperparameter ranges \(31\) exceeds the maximum of 30"),
    (_ranges(categorical=[_cat("c")]), r"^The categorical hyperparameter \[c\] needs 1 to 30"),
    (_ranges(categorical=[_cat("c", *[str(i) for i in range(31)])]),
     r"\[c\] has 31 values; at most 30 are allowed"),
    (_ranges(categorical=[_cat("c", "a", "b", "a")]), r"lists the value \[a\] more than once"),
    ({"AutoParameters": [{"Name": "lr", "ValueHint": "0.1"}]}, r"AutoParameters"),
], ids=["int-not-int", "int-word", "float-word", "nan", "overflow", "huge-int", "blank", "min-gt-max",
        "log-zero", "log-negative-int", "revlog-int", "revlog-one", "revlog-negative",
        "bad-scaling", "name-twice-across-kinds", "name-twice-categorical", "31-of-a-kind",
        "31-in-total", "no-values", "31-values", "value-twice", "autotune"])
def test_ranges_refused_in_aws_terms(request_ranges: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_ranges(request_ranges)


def test_a_range_may_not_also_be_static() -> None:
    with pytest.raises(ValidationError, match=r"^The hyperparameter \[epochs\] is both a static"):
        parse_ranges(_ranges(integer=[_int("epochs", "1", "9")]), static_names=["epochs", "x"])


def test_grid_takes_categorical_ranges_only() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_ranges(_ranges(integer=[_int("n", "1", "3")], categorical=[_cat("c", "a")]),
                     strategy="Grid")
    assert caught.value.message == GRID_ONLY_CATEGORICAL
    assert GRID_ONLY_CATEGORICAL == ("Only categorical parameters are supported when using "
                                     "the grid search strategy.")
    assert parse_ranges(_ranges(categorical=[_cat("c", "a")]), strategy="Grid") == [
        CategoricalRange("c", ("a",))]


def test_ranges_parsed_in_a_fixed_order_with_auto_resolved() -> None:
    request_ranges = {
        "CategoricalParameterRanges": [_cat("opt", '"sgd"', '"adam"')],
        "ContinuousParameterRanges": [
            _int("lr", "1e-5", "0.1"), _int("drop", "0.1", "0.5", "Auto"),
            _int("neg", "-3", "3000"), _int("m", "0", "0.999", "ReverseLogarithmic"),
            _int("exact", "0.01", "1", "Auto")],
        "IntegerParameterRanges": [_int("n", "1", "99"), _int("trees", "1", "100"),
                                   _int("k", "+3", "3", "Linear")],
    }
    assert parse_ranges(request_ranges, static_names=["epochs"]) == [
        IntegerRange("n", 1, 99, "Linear"),
        IntegerRange("trees", 1, 100, "Logarithmic"),
        IntegerRange("k", 3, 3, "Linear"),
        ContinuousRange("lr", 1e-5, 0.1, "Logarithmic"),
        ContinuousRange("drop", 0.1, 0.5, "Linear"),
        ContinuousRange("neg", -3.0, 3000.0, "Linear"),
        ContinuousRange("m", 0.0, 0.999, "ReverseLogarithmic"),
        ContinuousRange("exact", 0.01, 1.0, "Logarithmic"),
        CategoricalRange("opt", ('"sgd"', '"adam"')),
    ]
    assert parse_ranges(None) == [] and parse_ranges({}) == []


def test_encode_decode_and_counts() -> None:
    n, lr, opt = (IntegerRange("n", 1, 10), ContinuousRange("lr", 1e-5, 1.0, "Logarithmic"),
                  CategoricalRange("opt", ('"sgd"', '"adam"')))
    assert encode(n, 5) == "5" and decode(n, "5") == 5
    assert encode(lr, 0.1) == "0.1" and encode(lr, 1e-5) == "1e-05"
    assert encode(lr, 1 / 3) == "0.3333333333333333" and decode(lr, "0.3333333333333333") == 1 / 3
    assert encode(opt, '"adam"') == '"adam"' and decode(opt, '"adam"') == '"adam"'
    for bad in [(n, 11), (n, 2.5), (lr, 2.0), (opt, "adam")]:
        with pytest.raises(ValueError):
            encode(*bad)
    with pytest.raises(ValueError):
        decode(n, "5.0")
    assert [sample_value(r) for r in (n, lr, opt)] == [1, 1e-5, '"sgd"']
    grid = [CategoricalRange("a", ("1", "2", "3")), CategoricalRange("b", ("x", "y"))]
    assert grid_size(grid) == 6 and grid_size([]) == 1
    with pytest.raises(ValueError):
        grid_size([n])
    assert combinations([*grid, n]) == 60 and combinations([n, lr]) == math.inf
    check_enough_combinations(grid, 6)
    with pytest.raises(ValidationError, match=(
            r"^You don't have enough combinations of hyperparameter ranges\. The total number "
            r"of hyperparameter combinations for the provided ranges \[6\] must be equal or "
            r"greater than the value of MaxNumberOfJobs, \[10\]\. Provide additional ranges\.$")):
        check_enough_combinations(grid, 10)


def test_ranges_never_import_optuna() -> None:
    # The request checks import ranges; Optuna is the runner's alone.
    probe = ("import sys, json; import shipyard.control.tuning.ranges; "
             "print(json.dumps('optuna' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout) is False


# -- search: strategies -------------------------------------------------------------------

MIXED = [IntegerRange("n", 1, 1000, "Logarithmic"), IntegerRange("k", -3, 3),
         ContinuousRange("lr", 1e-5, 1e-1, "Logarithmic"), ContinuousRange("d", 0.0, 0.5),
         ContinuousRange("m", 0.0, 0.999, "ReverseLogarithmic"),
         CategoricalRange("opt", ('"sgd"', '"adam"', '"rmsprop"'))]


def _values(params: dict[str, str]) -> dict[str, Any]:
    return {r.name: decode(r, params[r.name]) for r in MIXED}


def _run(search: Search, objective: Any, trials: int) -> list[tuple[int, dict[str, str]]]:
    asked = []
    for _ in range(trials):
        got = search.ask()
        assert got is not None
        asked.append(got)
        search.tell(got[0], "complete", objective(got[1]))
    return asked


@pytest.mark.parametrize("strategy", ["Random", "Bayesian"])
def test_samplers_stay_in_range_and_repeat_with_a_seed(strategy: str) -> None:
    def objective(p: dict[str, str]) -> float:
        return float(p["lr"]) * 100 + float(p["d"])

    first = _run(make_search(strategy, MIXED, minimize=True, seed=7), objective, 15)
    again = _run(make_search(strategy, MIXED, minimize=True, seed=7), objective, 15)
    other = _run(make_search(strategy, MIXED, minimize=True, seed=8), objective, 15)
    assert first == again
    assert first != other
    assert [n for n, _ in first] == list(range(15))
    for _, params in first:
        assert set(params) == {r.name for r in MIXED}
        _values(params)  # decode checks each value lies in its range


def test_reverse_logarithmic_values_crowd_near_one() -> None:
    search = make_search("Random", [ContinuousRange("m", 0.0, 0.999, "ReverseLogarithmic"),
                                    ContinuousRange("lr", 1e-6, 1.0, "Logarithmic")],
                         minimize=True, seed=0)
    drawn = [search.ask() for _ in range(300)]
    moments = [float(p["m"]) for _, p in (d for d in drawn if d is not None)]
    rates = [float(p["lr"]) for _, p in (d for d in drawn if d is not None)]
    assert all(0.0 <= m <= 0.999 for m in moments)
    # u = 1 - m is log-uniform on [0.001, 1]: its median is 10**-1.5, m's about 0.968.
    assert 0.93 < statistics.median(moments) < 0.99
    # Nine in ten lie above 0.5 (a linear scale would put 45% there).
    assert sum(m > 0.5 for m in moments) > 250
    assert 1e-4 < statistics.median(rates) < 1e-2


def test_parallel_bayesian_asks_spread_out() -> None:
    search = make_search("Bayesian", [ContinuousRange("x", 0.0, 1.0)], minimize=True, seed=3)
    _run(search, lambda p: (float(p["x"]) - 0.3) ** 2, 12)
    pending = [search.ask() for _ in range(4)]
    xs = [float(p["x"]) for _, p in (q for q in pending if q is not None)]
    assert len(set(xs)) == 4
    assert [n for n, _ in (q for q in pending if q is not None)] == [12, 13, 14, 15]


def _branin(p: dict[str, str]) -> float:
    x, y = float(p["x"]), float(p["y"])
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x ** 2 + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


def test_bayesian_beats_random_on_branin() -> None:
    space = [ContinuousRange("x", -5.0, 10.0), ContinuousRange("y", 0.0, 15.0)]
    best: dict[str, list[float]] = {}
    for strategy in ("Bayesian", "Random"):
        for seed in range(5):
            asked = _run(make_search(strategy, space, minimize=True, seed=seed), _branin, 20)
            best.setdefault(strategy, []).append(min(_branin(p) for _, p in asked))
    # The global minimum is 0.398; median best of 20 trials over 5 seeds.
    assert statistics.median(best["Bayesian"]) < statistics.median(best["Random"])


def test_maximize_goes_the_other_way() -> None:
    space = [ContinuousRange("x", 0.0, 1.0)]
    search = make_search("Bayesian", space, minimize=False, seed=1)
    asked = _run(search, lambda p: float(p["x"]), 30)
    assert statistics.mean(float(p["x"]) for _, p in asked[-10:]) > 0.7


# -- Grid ------------------------------------------------------------------------------------

GRID = [CategoricalRange("a", ("1", "2", "3")), CategoricalRange("b", ("x", "y")),
        CategoricalRange("c", ('"on"', '"off"'))]


def _drain(search: Search) -> list[tuple[int, dict[str, str]]]:
    asked = []
    while (got := search.ask()) is not None:
        asked.append(got)
    return asked


def test_grid_hands_out_every_point_once_to_parallel_asks() -> None:
    search = make_search("Grid", GRID, minimize=True, seed=None)
    asked = _drain(search)  # nothing told: every trial still running
    points = [tuple(p.values()) for _, p in asked]
    assert len(points) == grid_size(GRID) == 12 == len(set(points))
    assert points[:3] == [("1", "x", '"on"'), ("1", "x", '"off"'), ("1", "y", '"on"')]
    assert [n for n, _ in asked] == list(range(12))
    assert search.ask() is None
    for number, _ in asked:
        search.tell(number, "complete", 1.0)
    assert search.ask() is None


def test_seeded_grid_is_a_repeatable_shuffle() -> None:
    plain = [tuple(p.values()) for _, p in _drain(make_search("Grid", GRID, minimize=True,
                                                              seed=None))]
    first = [tuple(p.values()) for _, p in _drain(make_search("Grid", GRID, minimize=True,
                                                              seed=11))]
    again = [tuple(p.values()) for _, p in _drain(make_search("Grid", GRID, minimize=True,
                                                              seed=11))]
    other = [tuple(p.values()) for _, p in _drain(make_search("Grid", GRID, minimize=True,
                                                              seed=12))]
    assert first == again and sorted(first) == sorted(plain)
    assert first != plain and first != other


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16, 17, 30])
def test_seeded_grid_of_any_size_is_a_permutation(size: int) -> None:
    ranges = [CategoricalRange("v", tuple(str(i) for i in range(size)))]
    asked = _drain(make_search("Grid", ranges, minimize=True, seed=size))
    assert sorted(int(p["v"]) for _, p in asked) == list(range(size))


def test_a_huge_grid_is_never_enumerated() -> None:
    ranges = [CategoricalRange(f"p{i}", tuple(str(v) for v in range(30))) for i in range(30)]
    assert grid_size(ranges) == 30 ** 30
    search = make_search("Grid", ranges, minimize=True, seed=5)
    points = {tuple(p.values()) for _, p in (search.ask() or (0, {}) for _ in range(50))}
    assert len(points) == 50


# -- history: a search rebuilt after a restart -------------------------------------------------

def test_rebuilt_search_continues_numbering_and_tells_running_trials() -> None:
    search = make_search("Bayesian", MIXED, minimize=True, seed=4)
    asked = [search.ask() for _ in range(5)]
    history = []
    for (number, params), state, value in zip(
            (a for a in asked if a is not None),
            ["complete", "failed", "pruned", "running", "complete"],
            [1.0, None, 3.0, None, 0.5], strict=True):
        history.append(PastTrial(number, params, state, value,
                                 steps=[(1, 4.0), (2, 3.0)] if state == "pruned" else ()))
    rebuilt = make_search("Bayesian", MIXED, minimize=True, seed=4, history=history)
    got = rebuilt.ask()
    assert got is not None and got[0] == 5
    # Not the first trials' values drawn again, and as repeatable as the first search.
    assert got[1] not in [p for _, p in (a for a in asked if a is not None)]
    assert make_search("Bayesian", MIXED, minimize=True, seed=4, history=history).ask() == got
    rebuilt.tell(3, "complete", 2.0)  # the trial that was running at the restart
    with pytest.raises(ValueError, match="trial 3 is not running"):
        rebuilt.tell(3, "complete", 2.0)
    with pytest.raises(ValueError, match="trial 0 is not running"):
        rebuilt.report(0, 1, 1.0)
    gap = make_search("Random", MIXED, minimize=True, seed=4,
                      history=[PastTrial(0, history[0].params, "complete", 1.0),
                               PastTrial(7, history[4].params, "running", None)])
    assert (gap.ask() or (None,))[0] == 8


def test_rebuilt_grid_never_repeats_a_point() -> None:
    search = make_search("Grid", GRID, minimize=True, seed=2)
    first = [search.ask() for _ in range(5)]
    states = ["complete", "failed", "running", "pruned", "running"]
    history = [PastTrial(n, p, s, 1.0 if s == "complete" else None)
               for (n, p), s in zip((f for f in first if f is not None), states, strict=True)]
    rebuilt = make_search("Grid", GRID, minimize=True, seed=2, history=history)
    rest = _drain(rebuilt)
    seen = [tuple(p.values()) for _, p in (f for f in first if f is not None)]
    later = [tuple(p.values()) for _, p in rest]
    assert len(later) == 7 and not set(seen) & set(later)
    assert sorted(seen + later) == sorted(tuple(p.values()) for _, p in _drain(
        make_search("Grid", GRID, minimize=True, seed=None)))
    assert [n for n, _ in rest] == list(range(5, 12))
    assert rest == _drain(search)  # the same order the first search would have gone on in
    rebuilt.tell(2, "complete", 0.3)
    rebuilt.tell(4, "failed", None)


def test_history_that_does_not_fit_the_ranges_is_refused() -> None:
    with pytest.raises(ValueError, match="trial 0 does not fit the ranges"):
        make_search("Random", MIXED, minimize=True, seed=0,
                    history=[PastTrial(0, {"n": "5"}, "complete", 1.0)])
    with pytest.raises(ValueError, match="share a number"):
        params = {"a": "1", "b": "x", "c": '"on"'}
        make_search("Grid", GRID, minimize=True, seed=0,
                    history=[PastTrial(0, params, "complete", 1.0),
                             PastTrial(0, params, "failed", None)])


def test_warm_start_seeds_the_sampler_without_taking_numbers() -> None:
    space = [ContinuousRange("x", 0.0, 1.0)]
    # A parent that found the best values near x = 0.9; trials outside today's range, failed
    # or without a value are left out.
    parent = [PastTrial(i, {"x": repr(i / 20)}, "complete", abs(i / 20 - 0.9))
              for i in range(20)]
    parent += [PastTrial(20, {"x": "1.5"}, "complete", 0.0),
               PastTrial(21, {"y": "0.1"}, "complete", 0.0),
               PastTrial(22, {"x": "0.1"}, "failed", None),
               PastTrial(23, {"x": "0.2"}, "pruned", math.nan)]
    search = make_search("Bayesian", space, minimize=True, seed=0, warm_start=parent)
    asked = [search.ask() for _ in range(6)]
    assert [a[0] for a in asked if a is not None] == list(range(6))
    xs = [float(a[1]["x"]) for a in asked if a is not None]
    assert statistics.mean(xs) > 0.65, xs


# -- early stopping (Auto): AWS's rule ---------------------------------------------------------

def _curve(search: Search, values: list[float], state: str = "complete",
           final: float | None = None) -> bool:
    """Run one trial through its steps; True when the search stopped it."""
    got = search.ask()
    assert got is not None
    number = got[0]
    for step, value in enumerate(values, start=1):
        if search.report(number, step, value):
            search.tell(number, "pruned", value)
            return True
    search.tell(number, state, values[-1] if final is None else final)
    return False


def test_auto_early_stopping_stops_a_clearly_bad_trial() -> None:
    space = [ContinuousRange("x", 0.0, 1.0)]
    search = make_search("Random", space, minimize=True, seed=0, early_stopping="Auto")
    good = [4.0, 2.0, 1.0, 0.5]
    # Fewer than 3 ended trials to compare with: nothing is stopped.
    assert not _curve(search, good)
    assert not _curve(search, [40.0, 20.0, 10.0, 5.0])
    assert not _curve(search, good)
    assert _curve(search, [40.0, 20.0, 10.0, 5.0])
    assert not _curve(search, [3.0, 1.5, 0.8, 0.4])


def test_auto_early_stopping_compares_with_running_averages() -> None:
    # Earlier trials went 10, 1: their running average at step 2 is 5.5. A trial at 3 there
    # goes on (Optuna's MedianPruner, comparing with the value 1 at step 2, would stop it).
    search = make_search("Random", [ContinuousRange("x", 0.0, 1.0)], minimize=True, seed=0,
                         early_stopping="Auto")
    for _ in range(3):
        _curve(search, [10.0, 1.0])
    assert not _curve(search, [9.0, 3.0])
    assert _curve(search, [9.0, 6.0])


def test_auto_early_stopping_when_maximizing_and_failed_trials_do_not_count() -> None:
    search = make_search("Random", [ContinuousRange("x", 0.0, 1.0)], minimize=False, seed=0,
                         early_stopping="Auto")
    for _ in range(2):
        _curve(search, [0.8, 0.9], state="failed")
    for final in (math.inf, math.nan):
        _curve(search, [0.8, 0.9], final=final)  # a final value that is no number: failed
    assert not _curve(search, [0.1, 0.2])
    got = search.ask()
    assert got is not None
    assert search.report(got[0], 1, math.nan) is False  # not recorded, stops nothing
    search.tell(got[0], "failed", None)
    for _ in range(2):
        _curve(search, [0.8, 0.9])
    assert _curve(search, [0.1, 0.2])


def test_early_stopping_off_never_stops() -> None:
    search = make_search("Bayesian", [ContinuousRange("x", 0.0, 1.0)], minimize=True, seed=0)
    for _ in range(4):
        _curve(search, [1.0, 0.5])
    assert not _curve(search, [100.0, 90.0])


# -- Hyperband -------------------------------------------------------------------------------

def test_hyperband_stops_trials_at_rungs_and_at_max_resource() -> None:
    search = make_search("Hyperband", MIXED, minimize=True, seed=0, hyperband=(1, 27))
    stopped_at = []
    for _ in range(40):
        got = search.ask()
        assert got is not None
        number, params = got
        quality = float(params["d"])  # the loss curve's floor: worse for larger d
        for step in range(1, 100):
            value = quality + 1.0 / step
            if search.report(number, step, value):
                stopped_at.append(step)
                search.tell(number, "pruned", value)
                break
        else:
            pytest.fail("a Hyperband trial ran past MaxResource")
    # Rungs at MinResource * 3**k: 1, 3, 9; every trial ends at 27 at the latest.
    assert set(stopped_at) <= {1, 3, 9, 27}
    assert 27 in stopped_at
    assert sum(step < 27 for step in stopped_at) >= 10


def test_hyperband_rebuilt_from_history_keeps_its_rungs() -> None:
    history = [PastTrial(i, {"x": repr(0.1 * i)}, "complete", 0.1 * i,
                         steps=[(s, 0.1 * i + 1 / s) for s in range(1, 10)]) for i in range(9)]
    search = make_search("Hyperband", [ContinuousRange("x", 0.0, 1.0)], minimize=True, seed=0,
                         hyperband=(1, 9), history=history)
    got = search.ask()
    assert got is not None and got[0] == 9
    # Far worse than every replayed trial at the first rung.
    stops = [search.report(got[0], step, 50.0) for step in range(1, 10)]
    assert True in stops and stops.index(True) + 1 in {1, 3}


# -- arguments, logging ------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    ({"strategy": "Annealing"}, "unknown strategy"),
    ({"early_stopping": "Sometimes"}, "unknown early stopping"),
    ({"strategy": "Hyperband"}, "Hyperband only"),
    ({"hyperband": (1, 9)}, "Hyperband only"),
    ({"strategy": "Hyperband", "hyperband": (1, 9), "early_stopping": "Auto"}, "must be Off"),
    ({"strategy": "Hyperband", "hyperband": (9, 1)}, "bad Hyperband resources"),
], ids=["strategy", "early-stopping", "hyperband-missing", "hyperband-extra",
        "hyperband-auto", "hyperband-backwards"])
def test_make_search_refuses_what_the_request_checks_refuse(args: dict[str, Any],
                                                            message: str) -> None:
    call: dict[str, Any] = {"strategy": "Random", **args}
    with pytest.raises(ValueError, match=message):
        make_search(call.pop("strategy"), MIXED, minimize=True, seed=0, **call)


def test_tell_refuses_unknown_states() -> None:
    search = make_search("Random", MIXED, minimize=True, seed=0)
    got = search.ask()
    assert got is not None
    with pytest.raises(ValueError, match="cannot tell state 'running'"):
        search.tell(got[0], "running", None)
    search.tell(got[0], "complete", 1.0)  # still running after the refusal


def test_optuna_is_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    ranges: list[Range] = [ContinuousRange("x", 0.0, 1.0)]
    _run(make_search("Bayesian", ranges, minimize=True, seed=0), lambda p: 1.0, 3)
    out, err = capfd.readouterr()
    assert "Trial" not in out + err and "study" not in out + err
