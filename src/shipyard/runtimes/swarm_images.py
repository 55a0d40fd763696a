"""How a swarm's nodes get the images they run (``runtimes.swarm``): pushed to a registry
they pull from, pinned by digest, or loaded into each node engine the runtime knows."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from shipyard.errors import ImageNotFound, RuntimeUnavailable, ShipyardError
from shipyard.runtimes.docker import translate_errors
from shipyard.runtimes.swarm_objects import has_image, schedulable, split_tag

if TYPE_CHECKING:
    from shipyard.runtimes.swarm import SwarmRuntime

log = logging.getLogger(__name__)


class ImageDistribution:
    """The images of ``runtime``'s containers, on its nodes; ``registry``: where the nodes
    pull from, ``registry_push``: where this machine reaches the same registry, when not by
    the nodes' address."""

    def __init__(self, runtime: SwarmRuntime, registry: str | None,
                 registry_push: str | None) -> None:
        self._rt = runtime
        self._registry = registry.rstrip("/") if registry else None
        self._registry_push = registry_push.rstrip("/") if registry_push else None
        self._lock = threading.Lock()
        #: Image id -> the reference the nodes pull, once pushed to the registry.
        self._distributed: dict[str, str] = {}
        #: (node hostname, image id) pairs known loaded.
        self._loaded: set[tuple[str, str]] = set()

    def reference(self, image: str) -> str:
        """The reference the nodes run ``image`` by, after making sure they can get it."""
        with translate_errors(image=image):
            image_id = self._rt._api.inspect_image(image)["Id"]
        if self._registry:
            with self._lock:
                known = self._distributed.get(image_id)
            if known is None:
                known = self._push(image)
                with self._lock:
                    self._distributed[image_id] = known
            return known
        self._load_on_nodes(image, image_id)
        return image

    def _push(self, image: str) -> str:
        """Tag and push ``image`` where the nodes pull from; the reference they run,
        pinned by digest (every node runs the same bytes, none looks for a newer tag)."""
        repository, tag = split_tag(image)
        first, _, rest = repository.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            repository = rest  # the image's own registry is replaced by the nodes'
        assert self._registry is not None
        target = f"{self._registry_push or self._registry}/{repository}"
        digest = ""
        with translate_errors(image=image):
            self._rt._api.tag(image, target, tag)
            for status in self._rt._api.push(target, tag, stream=True, decode=True):
                if status.get("error"):
                    raise RuntimeUnavailable(
                        f"could not push {image} to the registry "
                        f"{self._registry_push or self._registry}: {status['error']}")
                digest = (status.get("aux") or {}).get("Digest") or digest
        if not digest:
            raise RuntimeUnavailable(f"the registry did not say the digest of {target}:{tag}")
        return f"{self._registry}/{repository}:{tag}@{digest}"

    def _load_on_nodes(self, image: str, image_id: str) -> None:
        """``docker save | docker load`` into every schedulable node the runtime knows that
        lacks the image (a node that is down is skipped: the swarm places nothing there)."""
        ready = {(n.get("Description") or {}).get("Hostname") for n in self._rt._raw_nodes()
                 if schedulable(n)}
        with self._lock:
            wanted = [h for h in self._rt._node_urls
                      if h in ready and (h, image_id) not in self._loaded]
        failures: list[str] = []

        def load(hostname: str) -> None:
            try:
                node = self._rt._node_client(hostname)
                if not has_image(node, image_id):
                    with translate_errors(image=image):
                        node.load_image(self._rt._api.get_image(image))
                if not has_image(node, image):
                    with translate_errors(image=image):
                        node.tag(image_id, *split_tag(image))
                with self._lock:
                    self._loaded.add((hostname, image_id))
            except ShipyardError as exc:
                failures.append(f"{hostname}: {exc}")

        threads = [threading.Thread(target=load, args=(h,), daemon=True) for h in wanted]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures and len(failures) == len(wanted) and not any(
                loaded == image_id for _, loaded in self._loaded):
            raise ImageNotFound(f"image {image} could not be loaded onto any node: "
                                + "; ".join(failures))
        for failure in failures:
            # A node failing now is usually one the swarm is about to mark down; if it
            # places the container there anyway, the task is rejected with the engine's
            # "No such image", which the job's failure reason quotes.
            log.warning("image %s not loaded onto node %s", image, failure)
