"""Kubernetes overhead: a trivial training job and an endpoint on ``../shared/k8s``'s
one-node cluster and on the local Docker engine, in the same run.

- CreateTrainingJob -> Completed of a one-host job that writes a file and ends;
- CreateEndpoint -> InService of a one-instance endpoint whose server answers at once.

Both through an in-process control plane; the images are loaded onto the cluster's node
first (it pulls from nowhere), and each plane runs one job before timing. Needs root and the
fixture (``SHIPYARD_K8S_FIXTURE``, else beside the checkout or ``/work/shared/k8s``), which is
brought up here once the one-engine figures are taken, and torn down at the end.

Run from the repository root::

    .venv/bin/python benchmarks/kubernetes_runtime.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import bench_docker
import cluster
from bench_docker import LABELS, ROOT

RESULTS = ROOT / "benchmarks" / "results" / "kubernetes_runtime.json"
CANDIDATES = [os.environ.get("SHIPYARD_K8S_FIXTURE", ""),
              str(ROOT.parent / "shared" / "k8s" / "fixture.sh"),
              "/work/shared/k8s/fixture.sh"]


def fixture(script: Path, *args: str) -> str:
    done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"fixture.sh {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def plane_for(kind: str, scratch: Path, client: Any, kubeconfig: str) -> Any:
    sys.path.insert(0, str(ROOT / "src"))
    from shipyard.control import ControlPlane
    from shipyard.control.context import runtime_for
    from shipyard.runtimes import DockerRuntime
    from shipyard.settings import Settings

    values: dict[str, Any] = {"data_dir": str(scratch / kind / "state"),
                              "stop_grace_seconds": 3, "capacity_queue": False}
    if kind == "kubernetes":
        values.update(runtime="kubernetes", kubernetes_kubeconfig=kubeconfig,
                      kubernetes_namespace="shipyard-bench", kubernetes_cluster_dns=False,
                      kubernetes_shared_paths=str(scratch), scope=LABELS["org.shipyard.scope"])
        settings = Settings.load(values, environ={})
        return ControlPlane(settings, runtime_for(settings))
    settings = Settings.load(values, environ={})
    return ControlPlane(settings, DockerRuntime(client, labels=LABELS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    script = next((Path(c) for c in CANDIDATES if c and Path(c).is_file()), None)
    if script is None:
        raise SystemExit("the Kubernetes fixture is not here: set SHIPYARD_K8S_FIXTURE")
    client = bench_docker.ensure_engine()
    train, serve = cluster.images(client)
    scratch = Path(tempfile.mkdtemp(prefix="shipyard-bench-k8s-"))
    results: dict[str, dict[str, float]] = {}

    def measure(kind: str, plane: Any) -> None:
        try:
            cluster.train_once(plane, train, 1, scratch, f"warm-{kind}")
            results.setdefault("training, 1 host", {})[kind] = statistics.median(
                cluster.train_once(plane, train, 1, scratch, f"t-{kind}-{i}")
                for i in range(args.runs))
            results.setdefault("endpoint, 1 instance", {})[kind] = statistics.median(
                cluster.endpoint_once(plane, serve, f"ep-{kind}-{i}", 1, "ml.m5.large")
                for i in range(args.runs))
        finally:
            plane.close()

    try:
        # One engine first, while the cluster is down: its node's routes lie in the engine's
        # default address pools, and a network the engine made there would be unreachable
        # (tests/support/k8s.py).
        measure("engine", plane_for("engine", scratch, client, ""))
        fixture(script, "up")
        try:
            env = fixture(script, "env")
            kubeconfig = next(shlex.split(line.removeprefix("export "))[0].split("=", 1)[1]
                              for line in env.splitlines()
                              if line.startswith("export KUBECONFIG="))
            fixture(script, "load", train, serve)
            measure("kubernetes", plane_for("kubernetes", scratch, client, kubeconfig))
        finally:
            fixture(script, "down")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        bench_docker.remove_scoped_containers(client)
    print(f"{'median seconds, create -> done':<34} {'one engine':>11} {'kubernetes':>11}")
    for what, row in results.items():
        print(f"{what:<34} {row['engine']:>11.2f} {row['kubernetes']:>11.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"runs": args.runs, "results": results}, indent=2))


if __name__ == "__main__":
    main()
