"""ml.* instance types mapped to container CPU and memory limits.

Figures are AWS's published vCPU and memory for each type. ``local`` (the SDK's local mode
name) and ``local_gpu`` mean no limit. Unknown ``ml.*`` types are accepted without a limit
only if they are well formed, so new AWS types do not break old Shipyard versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class InstanceResources:
    cpus: float | None
    memory_bytes: int | None
    gpus: int = 0


_TABLE: dict[str, tuple[int, float, int]] = {
    # name: (vCPU, memory GiB, GPUs)
    "ml.t3.medium": (2, 4, 0),
    "ml.t3.large": (2, 8, 0),
    "ml.t3.xlarge": (4, 16, 0),
    "ml.t3.2xlarge": (8, 32, 0),
    "ml.m4.xlarge": (4, 16, 0),
    "ml.m4.2xlarge": (8, 32, 0),
    "ml.m4.4xlarge": (16, 64, 0),
    "ml.m5.large": (2, 8, 0),
    "ml.m5.xlarge": (4, 16, 0),
    "ml.m5.2xlarge": (8, 32, 0),
    "ml.m5.4xlarge": (16, 64, 0),
    "ml.m5.12xlarge": (48, 192, 0),
    "ml.m5.24xlarge": (96, 384, 0),
    "ml.m6i.large": (2, 8, 0),
    "ml.m6i.xlarge": (4, 16, 0),
    "ml.m6i.2xlarge": (8, 32, 0),
    "ml.c4.xlarge": (4, 7.5, 0),
    "ml.c4.2xlarge": (8, 15, 0),
    "ml.c5.large": (2, 4, 0),
    "ml.c5.xlarge": (4, 8, 0),
    "ml.c5.2xlarge": (8, 16, 0),
    "ml.c5.4xlarge": (16, 32, 0),
    "ml.c5.9xlarge": (36, 72, 0),
    "ml.c5.18xlarge": (72, 144, 0),
    "ml.c6i.large": (2, 4, 0),
    "ml.c6i.xlarge": (4, 8, 0),
    "ml.r5.large": (2, 16, 0),
    "ml.r5.xlarge": (4, 32, 0),
    "ml.r5.2xlarge": (8, 64, 0),
    "ml.p3.2xlarge": (8, 61, 1),
    "ml.p3.8xlarge": (32, 244, 4),
    "ml.p3.16xlarge": (64, 488, 8),
    "ml.g4dn.xlarge": (4, 16, 1),
    "ml.g4dn.2xlarge": (8, 32, 1),
    "ml.g4dn.12xlarge": (48, 192, 4),
    "ml.g5.xlarge": (4, 16, 1),
    "ml.g5.2xlarge": (8, 32, 1),
    "ml.g5.12xlarge": (48, 192, 4),
    "ml.g5.48xlarge": (192, 768, 8),
    "ml.p4d.24xlarge": (96, 1152, 8),
    "ml.p4de.24xlarge": (96, 1152, 8),
    "ml.p5.48xlarge": (192, 2048, 8),
}

UNLIMITED = frozenset({"local", "local_gpu"})
_WELL_FORMED = re.compile(r"ml\.[a-z0-9-]+\.[a-z0-9-]+")


def known_instance_types() -> list[str]:
    return sorted(_TABLE)


def resources_for(instance_type: str) -> InstanceResources | None:
    """Limits for a type; ``None`` when the name is not an instance type at all."""
    if instance_type in UNLIMITED:
        return InstanceResources(None, None, 1 if instance_type == "local_gpu" else 0)
    entry = _TABLE.get(instance_type)
    if entry is not None:
        cpus, mem_gib, gpus = entry
        return InstanceResources(float(cpus), int(mem_gib * GIB), gpus)
    if _WELL_FORMED.fullmatch(instance_type):
        return InstanceResources(None, None)
    return None
