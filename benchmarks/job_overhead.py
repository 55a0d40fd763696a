"""Job overhead: what Shipyard adds to running a training container by hand.

SageMaker runs a training job as ``docker run <image> train`` with the channels under
``/opt/ml/input/data/<channel>`` and the model written to ``/opt/ml/model``, then packs the model
into ``model.tar.gz`` at ``S3OutputPath/<job>/output/``. The floor is exactly that run done by a
user with the Docker CLI; the Shipyard figure is CreateTrainingJob -> status Completed (model
packed to a file:// output) through the control plane. The difference is Shipyard's overhead;
the target is at most 0.25 s (median).

Run from the repository root::

    .venv/bin/python benchmarks/job_overhead.py [--runs N] [--warmups N]

Everything the benchmark creates carries ``org.shipyard.managed=true`` and
``org.shipyard.scope=shipyard-bench``; at the end it removes only containers with that scope.
The image is kept (tagged by a hash of its build context) so the next run reuses it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import bench_docker
from bench_docker import BASE_IMAGE, LABELS, ROOT

TARGET_OVERHEAD_S = 0.25
RESULTS = ROOT / "benchmarks" / "results" / "job_overhead.json"
#: Phase boundaries, in order: (name, from mark, to mark). Marks come from the job's runner
#: timings plus ``t0`` (just before create), ``CreationTime`` and ``returned`` (wait() returned).
PHASES = (
    ("create", "t0", "CreationTime"),
    ("staging", "CreationTime", "staged"),
    ("start", "staged", "started"),
    ("run", "started", "exited"),
    ("packaging", "exited", "done"),
    ("report", "done", "returned"),
)

TRAIN_PY = """\
import json
import sys
from pathlib import Path

# SageMaker starts the image with the argument "train"; anything else is a usage error.
if sys.argv[1:] != ["train"]:
    sys.exit(f"usage: train (got {sys.argv[1:]})")
rows = Path("/opt/ml/input/data/training/data.csv").read_text().splitlines()
Path("/opt/ml/model/model.json").write_text(json.dumps({"rows": len(rows)}))
"""

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
COPY train.py /opt/program/train.py
ENTRYPOINT ["python3", "/opt/program/train.py"]
"""


@dataclass
class ShipyardRun:
    wall_s: float
    phases: dict[str, float]
    #: Extra detail for profiling: supervisor launch, and how long after the engine's exit
    #: time the supervisor noticed the exit.
    detail: dict[str, float] = field(default_factory=dict)


# -- setup -------------------------------------------------------------------------------------
def ensure_engine() -> Any:
    """A Docker client whose engine answers, with the base image present (built if missing)."""
    if shutil.which("docker") is None:
        sys.exit("the docker CLI is not on PATH: the floor measurement runs it")
    return bench_docker.ensure_engine()


def build_image(client: Any) -> str:
    """The trivial training image, tagged by a hash of its context so it is built once."""
    return bench_docker.build_context(client, "shipyard-bench/job-overhead", {
        "Dockerfile": DOCKERFILE.encode(), "train.py": TRAIN_PY.encode()})


remove_scoped_containers = bench_docker.remove_scoped_containers


# -- the two measurements ----------------------------------------------------------------------
def floor_run(image: str, data_dir: Path, scratch: Path) -> float:
    """``docker run --rm`` with the channel and model folders bound, as a user would type it."""
    model_dir = Path(tempfile.mkdtemp(prefix="model-", dir=scratch))
    argv = ["docker", "run", "--rm", "--name", f"shipyard-bench-floor-{uuid.uuid4().hex[:12]}"]
    for key, value in LABELS.items():
        argv += ["--label", f"{key}={value}"]
    argv += ["-v", f"{data_dir}:/opt/ml/input/data/training:ro",
             "-v", f"{model_dir}:/opt/ml/model", image, "train"]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"floor run failed ({proc.returncode}): {proc.stderr.strip()}")
    if not (model_dir / "model.json").is_file():
        sys.exit("floor run wrote no model.json")
    shutil.rmtree(model_dir, ignore_errors=True)
    return wall


def shipyard_run(plane: Any, image: str, data_dir: Path, out_dir: Path) -> ShipyardRun:
    """CreateTrainingJob -> Completed, with the phase split from the supervisor's marks."""
    name = f"bench-{uuid.uuid4().hex[:12]}"
    request = {
        "TrainingJobName": name,
        "RoleArn": "arn:aws:iam::000000000000:role/shipyard-bench",
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "InputDataConfig": [{"ChannelName": "training", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": str(data_dir),
            "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": out_dir.as_uri()},
        # Required now; the same as the default that CreateTrainingJob used to fill in.
        "ResourceConfig": {"InstanceType": "local", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
    }
    t0_wall = time.time()
    t0 = time.perf_counter()
    plane.create("training", request)
    record = plane.wait("training", name, timeout=120, poll=0.01)
    wall = time.perf_counter() - t0
    returned = t0_wall + wall
    if record["TrainingJobStatus"] != "Completed":
        sys.exit(f"job {name} ended {record['TrainingJobStatus']}: "
                 f"{record.get('FailureReason', '')}")
    model_tar = out_dir / name / "output" / "model.tar.gz"
    if not model_tar.is_file():
        sys.exit(f"job {name} completed without {model_tar}")
    with tarfile.open(model_tar) as tar:
        if not any(n.lstrip("./") == "model.json" for n in tar.getnames()):
            sys.exit(f"{model_tar} holds no model.json: {tar.getnames()}")
    runner = plane.ctx.store.get_job("training", name).runner
    marks = {**runner["timings"], "t0": t0_wall, "CreationTime": float(record["CreationTime"]),
             "returned": returned}
    phases = {phase: marks[end] - marks[start] for phase, start, end in PHASES}
    detail = {"launch": marks["prepare_start"] - marks["CreationTime"],
              # Time spent outside the engine's create/start/wait calls: Shipyard's own cost.
              "own_phases": sum(phases[p] for p in ("create", "staging", "packaging", "report"))}
    finished_at = (runner.get("finals") or {}).get("algo-1", {}).get("finished_at")
    if finished_at:
        detail["exit_detect"] = marks["exited"] - float(finished_at)
    if "logged" in marks:
        # Part of packaging: waiting after the exit until every log line is stored.
        detail["log_drain"] = marks["logged"] - marks["exited"]
    # The supervisor removes the container after the status is final: let that finish outside
    # the timed region so it does not slow the next measurement.
    plane.join(timeout=60)
    return ShipyardRun(wall, phases, detail)


# -- report ------------------------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = (statistics.quantiles(ordered, n=10, method="inclusive")[8]
           if len(ordered) > 1 else ordered[0])
    return {"median": statistics.median(ordered), "p90": p90, "min": ordered[0],
            "max": ordered[-1], "mean": statistics.fmean(ordered)}


def report(floor: list[float], ship: list[ShipyardRun], warmups: int) -> dict[str, Any]:
    floor_s, ship_s = summary(floor), summary([r.wall_s for r in ship])
    phases = {p: summary([r.phases[p] for r in ship]) for p, _, _ in PHASES}
    detail_keys = sorted({k for r in ship for k in r.detail})
    detail = {k: summary([r.detail[k] for r in ship if k in r.detail]) for k in detail_keys}
    overhead = ship_s["median"] - floor_s["median"]
    return {
        "benchmark": "job_overhead",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1m_at_end": os.getloadavg()[0],
                    "python": platform.python_version(), "docker": _docker_version()},
        "command": " ".join([".venv/bin/python benchmarks/job_overhead.py", *sys.argv[1:]]),
        "runs": len(floor), "warmups": warmups,
        "floor_s": floor_s, "shipyard_s": ship_s,
        "overhead_s": overhead,
        "target": f"overhead <= {TARGET_OVERHEAD_S} s",
        "pass": overhead <= TARGET_OVERHEAD_S,
        "phases_s": phases,
        "detail_s": detail,
        "samples": {"floor_s": floor, "shipyard_s": [asdict(r) for r in ship]},
    }


def _docker_version() -> str:
    proc = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                          check=False, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def print_table(result: dict[str, Any]) -> None:
    floor, ship = result["floor_s"], result["shipyard_s"]
    print(f"\njob overhead: {result['runs']} runs after {result['warmups']} warm-ups, "
          f"{result['machine']['cpus']} CPUs, docker {result['machine']['docker']}")
    print(f"{'':<22}{'median':>9}{'p90':>9}{'min':>9}{'max':>9}")
    for label, stats in (("floor (docker run)", floor), ("Shipyard job", ship)):
        print(f"{label:<22}" + "".join(f"{stats[k]:>9.3f}" for k in ("median", "p90", "min",
                                                                         "max")))
    verdict = "PASS" if result["pass"] else "FAIL"
    print(f"{'overhead (medians)':<22}{result['overhead_s']:>9.3f}   "
          f"target: {result['target']}  {verdict}")
    print("\nShipyard phases (s)    median      p90")
    for phase, stats in result["phases_s"].items():
        print(f"  {phase:<20}{stats['median']:>8.3f}{stats['p90']:>9.3f}")
    for key, stats in result["detail_s"].items():
        print(f"  ({key}){'':<{18 - len(key)}}{stats['median']:>8.3f}{stats['p90']:>9.3f}")


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="measured runs of each (10)")
    parser.add_argument("--warmups", type=int, default=2, help="unmeasured runs first (2)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"result file ({RESULTS})")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmups < 0:
        parser.error("--runs must be >= 1 and --warmups >= 0")

    sys.path.insert(0, str(ROOT / "src"))
    from shipyard.control import ControlPlane
    from shipyard.runtimes import DockerRuntime
    from shipyard.settings import Settings

    client = ensure_engine()
    image = build_image(client)
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-bench-"))
    plane = None
    try:
        data_dir = scratch / "data"
        data_dir.mkdir()
        (data_dir / "data.csv").write_text("".join(f"{i},{i * i}\n" for i in range(100)))
        out_dir = scratch / "out"
        plane = ControlPlane(
            Settings.load({"data_dir": str(scratch / "shipyard"), "runtime": "docker"}),
            DockerRuntime(labels=LABELS),
        )
        floor: list[float] = []
        ship: list[ShipyardRun] = []
        for i in range(args.warmups + args.runs):
            # Alternate which goes first, so drift on a shared engine hits both alike.
            order = ("floor", "ship") if i % 2 == 0 else ("ship", "floor")
            for which in order:
                if which == "floor":
                    wall = floor_run(image, data_dir, scratch)
                    if i >= args.warmups:
                        floor.append(wall)
                else:
                    run = shipyard_run(plane, image, data_dir, out_dir)
                    if i >= args.warmups:
                        ship.append(run)
            tag = "warm-up" if i < args.warmups else f"run {i - args.warmups + 1}/{args.runs}"
            if i >= args.warmups:
                print(f"{tag}: floor {floor[-1]:.3f} s, Shipyard {ship[-1].wall_s:.3f} s",
                      flush=True)
        result = report(floor, ship, args.warmups)
        print_table(result)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
        return 0
    finally:
        if plane is not None:
            plane.join(timeout=60)
            plane.close()
        remove_scoped_containers(client)
        shutil.rmtree(scratch, ignore_errors=True)
        client.close()


if __name__ == "__main__":
    sys.exit(main())
