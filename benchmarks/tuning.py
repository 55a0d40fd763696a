"""Hyperparameter tuning: what the tuning job adds to its trials, and how good its search is.

Two measurements, on the real Docker engine through an in-process control plane
(``ControlPlane`` with ``DockerRuntime``, as ``job_overhead.py``; the tuner runs as it does in
the server, trials as ordinary training jobs):

**Overhead.** A tuning job of 16 trials at parallelism 4 (Bayesian, one continuous range) of a
trivial image that sleeps 2 s and prints its objective, CreateHyperParameterTuningJob ->
Completed, against 4 x the same training job run alone (CreateTrainingJob -> Completed, the
ideal for 16 trials in 4 waves; target <= 1.15x) and, beside it, the same 16 training jobs
created by hand in 4 waves of 4 (what 4 containers at once cost on this machine, without the
tuner). Per trial, from the records: the gap between a slot freeing (a trial's final status
written, its runner's ``done`` mark) and the next trial's ``CreationTime`` (the tuner noticing,
telling, asking and creating); the tuning job's start (its ``CreationTime`` -> the first trial's)
and end (the last trial's final status -> ``HyperParameterTuningEndTime``). The search engine's
own ask + tell and the door's CreateTrainingJob are timed apart, in process.

**Search quality.** An image computing the Branin function of hyperparameters ``x1`` in
[-5, 10] and ``x2`` in [0, 15] (global minimum 0.397887) and printing it as the metric: the best
value after 20 trials at parallelism 2, for 5 seeds, for Random, Bayesian and Grid (a 5 x 5
categorical discretisation of the same box, 20 of its 25 points in the seed's order). Target:
Bayesian's median below Random's. Beside it, the same search engine driven in process in the
runner's ask/tell pattern (parallelism 2, trials ending in order) over 50 seeds, no containers.

Run from the repository root::

    .venv/bin/python benchmarks/tuning.py            # about 6 minutes on 2 cores
    .venv/bin/python benchmarks/tuning.py --quick    # about 2 minutes

Everything it creates carries ``org.shipyard.managed=true`` and
``org.shipyard.scope=shipyard-bench``; at the end it removes only containers with that scope.
The image is kept (tagged by a hash of its build context) for the next run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import bench_docker
from bench_docker import BASE_IMAGE, LABELS, ROOT

RESULTS = ROOT / "benchmarks" / "results" / "tuning.json"
TARGET_RATIO = 1.15
BRANIN_MIN = 0.397887
STRATEGIES = ("Random", "Bayesian", "Grid")
#: The grid's values: 5 evenly spaced points across each side of the box.
GRID_X1 = ("-5", "-1.25", "2.5", "6.25", "10")
GRID_X2 = ("0", "3.75", "7.5", "11.25", "15")
METRIC = {"Name": "objective", "Regex": r"objective=([-+0-9.eE]+)"}

TRAIN_PY = """\
import json, math, time
from pathlib import Path

def branin(x1, x2):
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10

hp = json.loads(Path("/opt/ml/input/config/hyperparameters.json").read_text())
time.sleep(float(hp.get("sleep", "0")))
if "x1" in hp:
    value = branin(float(hp["x1"]), float(hp["x2"]))
else:
    value = float(hp.get("x", "0")) ** 2
print(f"objective={value!r}", flush=True)
Path("/opt/ml/model/model.json").write_text(json.dumps({"objective": value}))
"""

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
COPY train.py /opt/program/train.py
ENTRYPOINT ["python3", "/opt/program/train.py"]
"""


def branin(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


# -- requests ----------------------------------------------------------------------------------
def training_definition(image: str, out_dir: Path, static: dict[str, str]) -> dict[str, Any]:
    """The members a trial's CreateTrainingJob shares with the tuning job's definition."""
    return {
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File",
                                   "MetricDefinitions": [METRIC]},
        "RoleArn": "arn:aws:iam::000000000000:role/shipyard-bench",
        "OutputDataConfig": {"S3OutputPath": out_dir.as_uri()},
        "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "StaticHyperParameters": static,
    }


def training_request(image: str, out_dir: Path, hyperparameters: dict[str, str]
                     ) -> dict[str, Any]:
    request = training_definition(image, out_dir, {})
    del request["StaticHyperParameters"]
    return {"TrainingJobName": f"bench-{uuid.uuid4().hex[:12]}",
            "HyperParameters": hyperparameters, **request}


def tuning_request(name: str, image: str, out_dir: Path, *, strategy: str, trials: int,
                   parallel: int, ranges: dict[str, Any], static: dict[str, str],
                   seed: int | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Strategy": strategy,
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "objective"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": trials,
                           "MaxParallelTrainingJobs": parallel},
        "ParameterRanges": ranges,
    }
    if seed is not None:
        config["RandomSeed"] = seed
    return {"HyperParameterTuningJobName": name, "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": training_definition(image, out_dir, static)}


def box_ranges(strategy: str) -> dict[str, Any]:
    if strategy == "Grid":
        return {"CategoricalParameterRanges": [{"Name": "x1", "Values": list(GRID_X1)},
                                               {"Name": "x2", "Values": list(GRID_X2)}]}
    return {"ContinuousParameterRanges": [
        {"Name": "x1", "MinValue": "-5", "MaxValue": "10", "ScalingType": "Linear"},
        {"Name": "x2", "MinValue": "0", "MaxValue": "15", "ScalingType": "Linear"}]}


# -- overhead ----------------------------------------------------------------------------------
def run_training(plane: Any, image: str, out_dir: Path, sleep: str) -> tuple[float, float]:
    """One training job alone: (create -> Completed wall s, the create call's own s)."""
    request = training_request(image, out_dir, {"sleep": sleep, "x": "0.5"})
    t0 = time.perf_counter()
    plane.create("training", request)
    created = time.perf_counter() - t0
    record = plane.wait("training", request["TrainingJobName"], timeout=300, poll=0.01)
    wall = time.perf_counter() - t0
    _check_completed(record, "TrainingJobStatus", request["TrainingJobName"])
    plane.join(timeout=60)
    return wall, created


def run_waves(plane: Any, image: str, out_dir: Path, sleep: str, trials: int,
              parallel: int) -> float:
    """``trials`` training jobs by hand, ``parallel`` at a time, each wave waited for."""
    t0 = time.perf_counter()
    for start in range(0, trials, parallel):
        names = []
        for _ in range(min(parallel, trials - start)):
            request = training_request(image, out_dir, {"sleep": sleep, "x": "0.5"})
            plane.create("training", request)
            names.append(request["TrainingJobName"])
        for name in names:
            _check_completed(plane.wait("training", name, timeout=300, poll=0.01),
                             "TrainingJobStatus", name)
    wall = time.perf_counter() - t0
    plane.join(timeout=60)
    return wall


def run_tuning(plane: Any, request: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """CreateHyperParameterTuningJob -> Completed: (wall s, what the records say)."""
    name = request["HyperParameterTuningJobName"]
    t0_wall = time.time()
    t0 = time.perf_counter()
    plane.create("tuning", request)
    record = plane.wait("tuning", name, timeout=900, poll=0.01)
    wall = time.perf_counter() - t0
    _check_completed(record, "HyperParameterTuningJobStatus", name)
    parallel = request["HyperParameterTuningJobConfig"]["ResourceLimits"][
        "MaxParallelTrainingJobs"]
    trials = plane.tuning_trials(name)
    done = {t["TrainingJobName"]: float(plane.ctx.store.get_job(
        "training", t["TrainingJobName"]).runner["timings"]["done"]) for t in trials}
    created = sorted(float(t["CreationTime"]) for t in trials)
    ended = sorted(done.values())
    # The k-th slot to free lets the (parallel + k)-th trial start.
    gaps = [created[i] - ended[i - parallel] for i in range(parallel, len(created))]
    values = [t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for t in trials
              if "FinalHyperParameterTuningJobObjectiveMetric" in t]
    plane.join(timeout=60)
    return wall, {
        "t0": t0_wall, "trials": len(trials), "completed": len(values),
        "best": min(values) if values else None,
        "slot_gaps_s": gaps,
        # Each trial's own CreationTime -> final status, as "alone" measures a job.
        "trial_s": [done[t["TrainingJobName"]] - float(t["CreationTime"]) for t in trials],
        "start_s": created[0] - float(record["CreationTime"]),
        "create_call_to_record_s": float(record["CreationTime"]) - t0_wall,
        "end_s": float(record["HyperParameterTuningEndTime"]) - ended[-1],
    }


def _check_completed(record: dict[str, Any], field: str, name: str) -> None:
    if record[field] != "Completed":
        sys.exit(f"{name} ended {record[field]}: {record.get('FailureReason', '')}")


def search_costs(trials: int, parallel: int) -> dict[str, dict[str, float]]:
    """Milliseconds per ask and per tell of the search engine alone, over one run of
    ``trials`` in the runner's pattern (one continuous range), by strategy."""
    from shipyard.control.tuning.ranges import parse_ranges
    from shipyard.control.tuning.search import make_search

    ranges = parse_ranges({"ContinuousParameterRanges": [
        {"Name": "x", "MinValue": "-1", "MaxValue": "1", "ScalingType": "Linear"}]})
    found = {}
    for strategy in ("Random", "Bayesian"):
        search = make_search(strategy, ranges, minimize=True, seed=1)
        asks: list[float] = []
        tells: list[float] = []
        outstanding: list[tuple[int, float]] = []
        asked = 0
        while asked < trials or outstanding:
            while asked < trials and len(outstanding) < parallel:
                t0 = time.perf_counter()
                got = search.ask()
                asks.append(time.perf_counter() - t0)
                assert got is not None
                outstanding.append((got[0], float(got[1]["x"]) ** 2))
                asked += 1
            number, value = outstanding.pop(0)
            t0 = time.perf_counter()
            search.tell(number, "complete", value)
            tells.append(time.perf_counter() - t0)
        found[strategy] = {"ask_ms_median": 1000 * statistics.median(asks),
                           "ask_ms_max": 1000 * max(asks),
                           "tell_ms_median": 1000 * statistics.median(tells)}
    return found


def overhead(plane: Any, image: str, out_dir: Path, *, trials: int, parallel: int,
             sleep: str, runs: int) -> dict[str, Any]:
    print(f"overhead: {trials} trials at parallelism {parallel}, {sleep} s each, "
          f"{runs} run(s) after a warm-up", flush=True)
    run_training(plane, image, out_dir, sleep)  # warm-up: image cache, first network
    alone, creates, waves, tunings, details = [], [], [], [], []
    ranges = {"ContinuousParameterRanges": [
        {"Name": "x", "MinValue": "-1", "MaxValue": "1", "ScalingType": "Linear"}]}
    for i in range(runs):
        for _ in range(2):
            wall, created = run_training(plane, image, out_dir, sleep)
            alone.append(wall)
            creates.append(created)
        waves.append(run_waves(plane, image, out_dir, sleep, trials, parallel))
        request = tuning_request(f"bench-tune-{uuid.uuid4().hex[:8]}", image, out_dir,
                                 strategy="Bayesian", trials=trials, parallel=parallel,
                                 ranges=ranges, static={"sleep": sleep}, seed=i)
        wall, detail = run_tuning(plane, request)
        tunings.append(wall)
        details.append(detail)
        print(f"  run {i + 1}/{runs}: alone {statistics.median(alone[-2:]):.2f} s, "
              f"{trials // parallel} waves by hand {waves[-1]:.2f} s, tuning job {wall:.2f} s",
              flush=True)
    single = statistics.median(alone)
    waves_count = math.ceil(trials / parallel)
    ideal = waves_count * single
    tuning = statistics.median(tunings)
    gaps = [g for d in details for g in d["slot_gaps_s"]]
    return {
        "trials": trials, "parallel": parallel, "sleep_s": float(sleep), "runs": runs,
        "strategy": "Bayesian",
        "single_job_s": summary(alone), "waves_by_hand_s": summary(waves),
        "tuning_job_s": summary(tunings),
        "ideal_s": ideal, "ratio_to_ideal": tuning / ideal,
        "ratio_to_waves_by_hand": tuning / statistics.median(waves),
        "target": f"tuning job <= {TARGET_RATIO} x ({waves_count} x a training job alone)",
        "pass": tuning / ideal <= TARGET_RATIO,
        "per_trial": {
            "slot_gap_s": summary(gaps),
            "trial_s": summary([t for d in details for t in d["trial_s"]]),
            "tuning_start_s": summary([d["start_s"] for d in details]),
            "tuning_end_s": summary([d["end_s"] for d in details]),
            "create_training_job_call_ms": summary([1000 * c for c in creates]),
            "search_engine": search_costs(trials, parallel),
        },
        "samples": {"single_job_s": alone, "waves_by_hand_s": waves, "tuning_job_s": tunings,
                    "tuning_details": details},
    }


# -- search quality ----------------------------------------------------------------------------
def quality(plane: Any, image: str, out_dir: Path, *, trials: int, parallel: int,
            seeds: list[int]) -> dict[str, Any]:
    print(f"search quality: Branin, {trials} trials at parallelism {parallel}, seeds {seeds}, "
          "the three strategies of a seed side by side", flush=True)
    best: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    walls: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    for seed in seeds:
        results: dict[str, tuple[float, dict[str, Any]]] = {}

        def one(strategy: str, seed: int = seed,
                results: dict[str, tuple[float, dict[str, Any]]] = results) -> None:
            request = tuning_request(
                f"bench-{strategy.lower()[:4]}-{seed}-{uuid.uuid4().hex[:6]}", image, out_dir,
                strategy=strategy, trials=trials, parallel=parallel,
                ranges=box_ranges(strategy), static={}, seed=seed)
            results[strategy] = run_tuning(plane, request)

        threads = [threading.Thread(target=one, args=(s,)) for s in STRATEGIES]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for strategy in STRATEGIES:
            if strategy not in results:
                sys.exit(f"the {strategy} tuning job of seed {seed} did not finish")
            wall, detail = results[strategy]
            if detail["completed"] != trials:
                sys.exit(f"{strategy} seed {seed}: {detail['completed']} of {trials} trials "
                         "have an objective")
            best[strategy].append(detail["best"])
            walls[strategy].append(wall)
        print(f"  seed {seed}: " + ", ".join(f"{s} {best[s][-1]:.4f} ({walls[s][-1]:.1f} s)"
                                              for s in STRATEGIES), flush=True)
    grid_points = sorted(branin(float(a), float(b)) for a in GRID_X1 for b in GRID_X2)
    random_median = statistics.median(best["Random"])
    bayes_median = statistics.median(best["Bayesian"])
    return {
        "function": "Branin", "global_minimum": BRANIN_MIN, "trials": trials,
        "parallel": parallel, "seeds": seeds,
        "best": {s: summary(best[s]) for s in STRATEGIES},
        "best_by_seed": best,
        "tuning_job_s": {s: summary(walls[s]) for s in STRATEGIES},
        "grid": {"x1": list(GRID_X1), "x2": list(GRID_X2), "points": len(grid_points),
                 "best_point_value": grid_points[0]},
        "target": "Bayesian median < Random median",
        "pass": bayes_median < random_median,
    }


def engine_quality(trials: int, parallel: int, seeds: int) -> dict[str, Any]:
    """The same search engine in process, in the runner's ask/tell pattern: many seeds."""
    from shipyard.control.tuning.ranges import parse_ranges
    from shipyard.control.tuning.search import make_search

    best: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    for strategy in STRATEGIES:
        ranges = parse_ranges(box_ranges(strategy), strategy=strategy)
        for seed in range(seeds):
            search = make_search(strategy, ranges, minimize=True, seed=seed)
            outstanding: list[tuple[int, float]] = []
            values: list[float] = []
            asked = 0
            while asked < trials or outstanding:
                while asked < trials and len(outstanding) < parallel:
                    got = search.ask()
                    if got is None:
                        asked = trials
                        break
                    number, params = got
                    outstanding.append((number, branin(float(params["x1"]),
                                                       float(params["x2"]))))
                    asked += 1
                if not outstanding:
                    break
                number, value = outstanding.pop(0)
                search.tell(number, "complete", value)
                values.append(value)
            best[strategy].append(min(values))
    return {"trials": trials, "parallel": parallel, "seeds": seeds,
            "best": {s: summary(best[s]) for s in STRATEGIES},
            "bayesian_below_random_median": statistics.median(best["Bayesian"])
            < statistics.median(best["Random"])}


# -- report ------------------------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = (statistics.quantiles(ordered, n=10, method="inclusive")[8]
           if len(ordered) > 1 else ordered[0])
    return {"median": statistics.median(ordered), "p90": p90, "min": ordered[0],
            "max": ordered[-1], "mean": statistics.fmean(ordered), "n": len(ordered)}


def machine() -> dict[str, Any]:
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    proc = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                          check=False, capture_output=True, text=True)
    return {"cpus": os.cpu_count(), "mem_gib": round(mem_kib / 2**20, 1),
            "platform": platform.platform(), "python": platform.python_version(),
            "docker": proc.stdout.strip() or "unknown",
            "loadavg_1m_at_end": os.getloadavg()[0]}


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\ntuning: {m['cpus']} CPUs, {m['mem_gib']} GiB, docker {m['docker']}")
    o = result["overhead"]
    if o is not None:
        waves = math.ceil(o["trials"] / o["parallel"])
        print(f"\noverhead: {o['trials']} trials x {o['sleep_s']:g} s at parallelism "
              f"{o['parallel']} ({o['strategy']}), {o['runs']} run(s)")
        print(f"{'':<40}{'median':>9}{'min':>9}{'max':>9}")
        rows = (("training job alone", o["single_job_s"]),
                (f"{waves} waves of {o['parallel']} by hand", o["waves_by_hand_s"]),
                ("tuning job", o["tuning_job_s"]))
        for label, stats in rows:
            print(f"{label:<40}" + "".join(f"{stats[k]:>9.2f}" for k in ("median", "min",
                                                                          "max")))
        verdict = "PASS" if o["pass"] else "FAIL"
        print(f"{'ideal: ' + str(waves) + ' x alone':<40}{o['ideal_s']:>9.2f}")
        print(f"tuning / ideal {o['ratio_to_ideal']:.3f} (target <= {TARGET_RATIO}: {verdict});"
              f" tuning / waves by hand {o['ratio_to_waves_by_hand']:.3f}")
        p = o["per_trial"]
        print("\ncontrol plane per trial (s)             median      p90      max")
        for label, key in (("a trial: created -> final status", "trial_s"),
                           ("slot freed -> next trial created", "slot_gap_s"),
                           ("tuning created -> first trial", "tuning_start_s"),
                           ("last trial done -> tuning ended", "tuning_end_s")):
            s = p[key]
            print(f"  {label:<38}{s['median']:>7.3f}{s['p90']:>9.3f}{s['max']:>9.3f}")
        c = p["create_training_job_call_ms"]
        print(f"  CreateTrainingJob at the door, ms     {c['median']:>7.1f}{c['p90']:>9.1f}"
              f"{c['max']:>9.1f}")
        for strategy, costs in p["search_engine"].items():
            print(f"  {strategy:<8} ask / tell, ms (median)    {costs['ask_ms_median']:>7.1f}"
                  f"  {costs['tell_ms_median']:>6.1f}   (ask max {costs['ask_ms_max']:.1f})")
    q = result["quality"]
    if q is not None:
        print(f"\nsearch quality: best Branin value after {q['trials']} trials at parallelism "
              f"{q['parallel']}, seeds {q['seeds']} (global minimum {BRANIN_MIN}; the 5 x 5 "
              f"grid's best point {q['grid']['best_point_value']:.4f})")
        engine = result["engine_quality"]
        print(f"{'':<10}{'median':>9}{'min':>9}{'max':>9}   by seed"
              f"{'':<31}engine only, {engine['seeds']} seeds: median (min-max)")
        for s in STRATEGIES:
            b, e = q["best"][s], engine["best"][s]
            seeds = " ".join(f"{v:.3f}" for v in q["best_by_seed"][s])
            print(f"{s:<10}{b['median']:>9.4f}{b['min']:>9.4f}{b['max']:>9.4f}   {seeds:<38}"
                  f"{e['median']:.4f} ({e['min']:.4f}-{e['max']:.4f})")
        verdict = "PASS" if q["pass"] else "FAIL"
        print(f"target: {q['target']}: {verdict}")


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a short look: 8 trials for the overhead, 1 run; 12 trials and "
                             "2 seeds for search quality")
    parser.add_argument("--only", choices=("overhead", "quality"), help="one half only")
    parser.add_argument("--runs", type=int, help="overhead runs (3; --quick 1)")
    parser.add_argument("--seeds", type=int, help="search-quality seeds (5; --quick 2)")
    parser.add_argument("--parallel", type=int, default=4,
                        help="the overhead's parallelism (4): how many trials at a time")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"result file ({RESULTS})")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    seeds = list(range(args.seeds or (2 if args.quick else 5)))
    if runs < 1 or not seeds or args.parallel < 1:
        parser.error("--runs, --seeds and --parallel must be >= 1")

    sys.path.insert(0, str(ROOT / "src"))
    from shipyard.control import ControlPlane
    from shipyard.runtimes import DockerRuntime
    from shipyard.settings import Settings

    if shutil.which("docker") is None:
        sys.exit("the docker CLI is not on PATH")
    client = bench_docker.ensure_engine()
    image = bench_docker.build_context(client, "shipyard-bench/tuning", {
        "Dockerfile": DOCKERFILE.encode(), "train.py": TRAIN_PY.encode()})
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-bench-tuning-"))
    plane = None
    started = time.perf_counter()
    try:
        out_dir = scratch / "out"
        plane = ControlPlane(
            Settings.load({"data_dir": str(scratch / "shipyard"), "runtime": "docker"}),
            DockerRuntime(labels=LABELS))
        result: dict[str, Any] = {
            "benchmark": "tuning",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python benchmarks/tuning.py", *sys.argv[1:]]),
            "quick": args.quick, "overhead": None, "quality": None, "engine_quality": None,
        }
        if args.only in (None, "overhead"):
            trials = 8 if args.quick else 16
            result["overhead"] = overhead(plane, image, out_dir, trials=trials,
                                          parallel=args.parallel, sleep="2", runs=runs)
        if args.only in (None, "quality"):
            trials = 12 if args.quick else 20
            result["quality"] = quality(plane, image, out_dir, trials=trials, parallel=2,
                                        seeds=seeds)
            result["engine_quality"] = engine_quality(trials, 2, 10 if args.quick else 50)
        result["machine"] = machine()
        result["wall_s"] = time.perf_counter() - started
        print_table(result)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json} ({result['wall_s']:.0f} s in all)")
        return 0
    finally:
        if plane is not None:
            plane.join(timeout=60)
            plane.close()
        bench_docker.remove_scoped_containers(client)
        shutil.rmtree(scratch, ignore_errors=True)
        client.close()


if __name__ == "__main__":
    sys.exit(main())
