"""A real single-node Kubernetes for the cluster tests: the fixture in ``../shared/k8s``
(Kubernetes 1.20.2, a kubelet with a ``dockerd`` of its own in a network namespace; its
README says what it has and lacks: no cluster DNS, no kube-proxy, no Indexed Jobs).

Made for the module that asks, torn down after it; the images a test needs are loaded into
the node's engine (it pulls from nowhere). Needs root; in CI a missing piece is a failure,
not a skip. ``SHIPYARD_K8S_FIXTURE`` names the fixture's ``fixture.sh`` where it is elsewhere.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.images import ROOT

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: Where the fixture may be: the setting, beside the checkout, where this project's machines
#: keep it.
CANDIDATES = [os.environ.get("SHIPYARD_K8S_FIXTURE", ""),
              str(ROOT.parent / "shared" / "k8s" / "fixture.sh"),
              "/work/shared/k8s/fixture.sh"]


@dataclass(frozen=True)
class Cluster:
    script: Path
    kubeconfig: str
    node_docker_host: str
    node_ip: str

    def load(self, *images: str) -> None:
        """Put ``images`` (from the main engine) into the node's engine."""
        done = subprocess.run(["bash", str(self.script), "load", *images],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def k8s() -> Iterator[Cluster]:
    """The cluster, for one module: made and torn down around it (~10 s), never left up
    while other tests run. Its node's routes (pods on 172.30.0.0/24, the node on
    192.168.235.0/24) lie in the Docker engine's default address pools, and the engine does
    not steer new networks clear of routes: seen, an endpoint's network made as
    172.30.0.0/16 on the main engine, its container unreachable (the fixture's more
    specific route took its traffic)."""
    script = next((Path(c) for c in CANDIDATES if c and Path(c).is_file()), None)
    if script is None:
        _unavailable("the Kubernetes test fixture (../shared/k8s/fixture.sh) is not here; "
                     "set SHIPYARD_K8S_FIXTURE")
        raise AssertionError  # not reached
    if os.geteuid() != 0:
        _unavailable("the Kubernetes tests need root (network namespaces, dockerd, kubelet)")
    made = subprocess.run(["bash", str(script), "up"], capture_output=True, text=True,
                          timeout=300)
    if made.returncode != 0:
        subprocess.run(["bash", str(script), "down"], capture_output=True, timeout=120)
        _unavailable(f"could not make the test cluster: {made.stderr[-3000:]}")
    try:
        env = subprocess.run(["bash", str(script), "env"], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        values = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1)
                      for line in env.splitlines() if line.startswith("export "))
        yield Cluster(script, values["KUBECONFIG"], values["SHIPYARD_K8S_NODE_DOCKER_HOST"],
                      values["SHIPYARD_K8S_NODE_IP"])
    finally:
        subprocess.run(["bash", str(script), "down"], capture_output=True, timeout=120)
