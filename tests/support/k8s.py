"""A real single-node Kubernetes for the cluster tests: the fixture in ``../shared/k8s``
(Kubernetes 1.20.2, a kubelet with a ``dockerd`` of its own in a network namespace; its
README says what it has and lacks: no cluster DNS, no kube-proxy, no Indexed Jobs).

Made for the module that asks, torn down after it; the images a test needs are loaded into
the node's engine (it pulls from nowhere). Needs root; in CI a missing piece is a failure,
not a skip. ``SHIPYARD_K8S_FIXTURE`` names the fixture's ``fixture.sh`` where it is elsewhere.
"""

from __future__ import annotations

import contextlib
import ipaddress
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


def free_ranges() -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """Two /24s for the fixture (the node's link, the pods) that overlap no route or address
    on this machine, from 10.200.0.0/13: outside Docker's default address pools (172.17-31/16,
    192.168/16) and the fixture's service range (10.96.0.0/16), so engine networks made while
    the cluster is up do not land on them either."""
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True,
                            check=True).stdout.splitlines()
    addresses = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True,
                               check=True).stdout.splitlines()
    taken = []
    for word in [r.split()[0] for r in routes if r.strip()] + \
            [a.split()[3] for a in addresses if len(a.split()) > 3]:
        with contextlib.suppress(ValueError):  # "default"
            taken.append(ipaddress.IPv4Network(word, strict=False))
    free = (net for net in ipaddress.IPv4Network("10.200.0.0/13").subnets(new_prefix=24)
            if not any(net.overlaps(t) for t in taken))
    return next(free), next(free)


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def k8s() -> Iterator[Cluster]:
    """The cluster, for one module: made and torn down around it (~10 s), never left up
    while other tests run. Its two routes (the node's link, its pods) go where nothing else
    is (:func:`free_ranges`): the fixture's defaults (192.168.235.0/24, 172.30.0.0/24) lie in
    the Docker engine's default address pools, and both ways of colliding were seen: an
    endpoint's network made as 172.30.0.0/16 while the cluster was up (its container
    unreachable, the fixture's more specific route taking its traffic), and, in CI, the
    fixture refusing to start beside an engine network holding 192.168.235.0/24."""
    script = next((Path(c) for c in CANDIDATES if c and Path(c).is_file()), None)
    if script is None:
        _unavailable("the Kubernetes test fixture (../shared/k8s/fixture.sh) is not here; "
                     "set SHIPYARD_K8S_FIXTURE")
        raise AssertionError  # not reached
    if os.geteuid() != 0:
        _unavailable("the Kubernetes tests need root (network namespaces, dockerd, kubelet)")
    link, pods = free_ranges()
    addresses = {"SHIPYARD_K8S_NODE_IP": str(link[1]), "SHIPYARD_K8S_NS_IP": str(link[2]),
                 "SHIPYARD_K8S_LINK_PREFIX": str(link.prefixlen),
                 "SHIPYARD_K8S_POD_CIDR": str(pods)}
    made = subprocess.run(["bash", str(script), "up"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **addresses})
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
