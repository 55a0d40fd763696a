"""How Shipyard's names and labels become Kubernetes' (object names are DNS labels, label
values at most 63 characters), and the labels and annotations the kubernetes runtime puts on
what it makes."""

from __future__ import annotations

import hashlib
import re

__all__ = ["GPU_RESOURCE", "ID_LABEL", "MAIN", "NAME_ANNOTATION", "NAME_PATTERN",
           "NETWORK_LABEL", "container_id", "kubernetes_name", "label_value"]

#: Where a container's own name is kept (annotations have no length limit).
NAME_ANNOTATION = "org.shipyard.container"
#: A digest of the container's name, to find its pod by.
ID_LABEL = "org.shipyard.container-id"
#: The network (headless Service) a pod belongs to.
NETWORK_LABEL = "org.shipyard.network"
#: The device plugin's resource of NVIDIA GPUs.
GPU_RESOURCE = "nvidia.com/gpu"
#: The name of the one container of each pod.
MAIN = "main"
_NAME_MAX = 63
NAME_PATTERN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def kubernetes_name(name: str) -> str:
    """``name`` as a Kubernetes object name (a DNS label): itself when it is one, else a
    lowercase, shortened form with a digest of the whole (still unique)."""
    if len(name) <= _NAME_MAX and NAME_PATTERN.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return f"{cleaned[: _NAME_MAX - 13].rstrip('-')}-{digest}".lstrip("-")


def container_id(name: str) -> str:
    """A digest of a container's name: a label value to find its pod by."""
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def label_value(value: str) -> str:
    """``value`` as a label value: itself where it is one, else a digest of it."""
    if len(value) <= _NAME_MAX and _LABEL_VALUE_RE.fullmatch(value):
        return value
    return hashlib.sha256(value.encode()).hexdigest()[:32]
