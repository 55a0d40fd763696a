"""Instance types fitted to this machine: one place for every container a job, an endpoint or
a transform job starts.

Notebooks written for AWS name types such as ``ml.m5.4xlarge`` (16 vCPUs, 64 GiB) as a matter
of course; a Docker engine refuses a CPU limit above its own CPUs ("Range of CPUs is from 0.01
to 2.00"). So a type's CPUs and memory (``contract.resources_for``) are capped at what the
runtime can give one container (``Runtime.capacity``), the job says so (a training job in the
``StatusMessage`` of its ``Training`` transition; every owner in a warning of the server's
log), and the record keeps the type as asked (``ResourceConfig`` is unchanged in Describe).

A GPU type where no GPU is available to containers runs on CPU with the same kind of notice,
or is refused with ``ValidationError`` when the setting ``refuse_missing_gpu`` is on: at the
door (CreateTrainingJob, CreateEndpoint...) and again when a container starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shipyard.contract.instances import GIB, resources_for
from shipyard.control.context import Context
from shipyard.errors import ValidationError
from shipyard.runtimes.base import Capacity

log = logging.getLogger(__name__)

__all__ = ["Limits", "check_instance_type", "fit", "limits_for"]


@dataclass(frozen=True)
class Limits:
    """A container's CPU and memory limits (``None``: none), the GPUs it gets, and what was
    changed to fit the machine, in words for the user ("" when the type fits as it is)."""

    cpus: float | None
    memory_bytes: int | None
    notice: str = ""
    gpus: int = 0


def _cpus(n: float) -> str:
    return f"{n:g} vCPU" + ("" if n == 1 else "s")


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}".removesuffix(".0") + " GiB"


def fit(instance_type: str, capacity: Capacity | None, *,
        refuse_missing_gpu: bool = False) -> Limits:
    """The limits of ``instance_type`` capped at ``capacity`` (a pure function).

    ``capacity`` ``None`` (the runtime cannot tell) leaves the type's figures as they are; so
    does a capacity figure of 0 (unknown). Raises ``ValidationError`` for a GPU type when no
    GPU is available and ``refuse_missing_gpu`` is on.
    """
    resources = resources_for(instance_type)
    if resources is None:
        return Limits(None, None)
    cpus, memory = resources.cpus, resources.memory_bytes
    if capacity is None:
        return Limits(cpus, memory, gpus=resources.gpus)
    asked: list[str] = []
    have: list[str] = []
    if cpus is not None and 0 < capacity.cpus < cpus:
        asked.append(_cpus(cpus))
        have.append(_cpus(capacity.cpus))
        cpus = capacity.cpus
    if memory is not None and 0 < capacity.memory_bytes < memory:
        asked.append(_gib(memory))
        have.append(_gib(capacity.memory_bytes))
        memory = capacity.memory_bytes
    notices = []
    if asked:
        notices.append(f"{instance_type} has {' and '.join(asked)}; each container is "
                       f"capped at this machine's {' and '.join(have)}.")
    if resources.gpus > capacity.gpus:
        gpus = f"{resources.gpus} GPU" + ("" if resources.gpus == 1 else "s")
        if capacity.gpus == 0:
            if refuse_missing_gpu:
                raise ValidationError(
                    f"{instance_type} has {gpus} and no GPU is available to containers here; "
                    "the setting refuse_missing_gpu (SHIPYARD_REFUSE_MISSING_GPU) refuses such "
                    "requests. Choose a CPU instance type, or turn the setting off to run on "
                    "CPU.")
            notices.append(f"{instance_type} has {gpus} and no GPU is available to "
                           "containers here: it runs on CPU.")
        else:
            notices.append(f"{instance_type} has {gpus}; {capacity.gpus:d} available here.")
    return Limits(cpus, memory, " ".join(notices), min(resources.gpus, capacity.gpus))


def limits_for(ctx: Context, instance_type: str, owner: str) -> Limits:
    """The limits of one container of ``owner`` (e.g. "training job x") on this plane's
    runtime; a notice is logged as a warning naming ``owner``."""
    limits = fit(instance_type, ctx.runtime.capacity(),
                 refuse_missing_gpu=ctx.settings.refuse_missing_gpu)
    if limits.notice:
        log.warning("%s: %s", owner, limits.notice)
    return limits


def check_instance_type(ctx: Context, instance_type: str) -> None:
    """Refuse at the door what :func:`limits_for` would refuse when the container starts."""
    fit(instance_type, ctx.runtime.capacity(), refuse_missing_gpu=ctx.settings.refuse_missing_gpu)
