"""The serving settings: every ``SAGEMAKER_*``/``SHIPYARD_SERVE_*`` variable, read once at start.

Variables (reference section 4.3 and 4.1; defaults as AWS's, except where noted):

===================================== ============ ============================================
``SAGEMAKER_BIND_TO_PORT``            8080         listening port (``0`` picks a free one)
``SHIPYARD_SERVE_HOST``               0.0.0.0      listening address
``SAGEMAKER_MODEL_SERVER_WORKERS``    usable CPUs  worker processes, each with its own model
``SAGEMAKER_MODEL_SERVER_TIMEOUT``    60           seconds per request (MMS read minutes: #99)
``SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS``         same, wins over the above when set
``SAGEMAKER_MAX_PAYLOAD_IN_MB``       6            request bodies above this get 413
``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` application/json  used for a missing or ``*/*`` Accept
``SAGEMAKER_PROGRAM``                 inference.py the user module in the code dir
``SAGEMAKER_SUBMIT_DIRECTORY``        <model>/code the code dir, when it is a local folder
``SAGEMAKER_BASE_DIR``                /opt/ml      root; the model is ``<root>/model``
``SAGEMAKER_BATCH_STRATEGY``          MULTI_RECORD for ``GET /execution-parameters``
``SAGEMAKER_MAX_CONCURRENT_TRANSFORMS`` workers    for ``GET /execution-parameters``
``SHIPYARD_SERVE_DEBUG_ERRORS``       false        ``true``: tracebacks in 500 bodies
``SHIPYARD_SERVE_PRELOAD``            false        ``true``: load once, then fork the workers
``SHIPYARD_SERVE_DRAIN_SECONDS``      25           SIGTERM grace (SageMaker kills at 30 s)
``SHIPYARD_SERVE_LOOP``               auto         ``auto`` (uvloop if installed), ``asyncio``
``SAGEMAKER_MULTI_MODEL``             false        ``true``: multi-model mode (the ``/models`` API)
``SAGEMAKER_MULTI_MODEL_ROOT``        <root>/models where on-demand models are found
``SHIPYARD_MME_MEMORY_MB``            70 % of limit memory the loaded models may use, all
                                                   workers together (limit: cgroup, else host)
===================================== ============ ============================================
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from shipyard.contract.paths import DEFAULT_ROOT
from shipyard.errors import ValidationError
from shipyard.toolkit.serving.memory import default_budget, memory_limit

DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_PAYLOAD_MB = 6.0
UNLIMITED_PAYLOAD = 1 << 62
DEFAULT_DRAIN_S = 25.0
MIB = 1024 * 1024


def usable_cpus() -> int:
    """CPUs this process may run on (cgroup-pinned containers report fewer than the host)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _number(environ: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValidationError(f"{name}={raw!r} is not a number") from exc
    if value < minimum:
        raise ValidationError(f"{name}={raw!r} must be at least {minimum:g}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = environ.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ValidationError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """Everything the server needs, built once by :meth:`from_environ` and passed down."""

    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    workers: int = 1
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_payload_bytes: int = int(DEFAULT_MAX_PAYLOAD_MB * 1024 * 1024)
    default_accept: str = "application/json"
    model_dir: Path = Path(DEFAULT_ROOT) / "model"
    code_dir: Path = Path(DEFAULT_ROOT) / "model" / "code"
    program: str = "inference.py"
    batch_strategy: str = "MULTI_RECORD"
    max_concurrent_transforms: int = 1
    debug_errors: bool = False
    preload: bool = False
    drain_s: float = DEFAULT_DRAIN_S
    loop: str = "auto"
    multi_model: bool = False
    models_root: Path = Path(DEFAULT_ROOT) / "models"
    #: multi-model mode's budget for all loaded models in all workers (bytes)
    models_memory_bytes: int = 1 << 30

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ServeSettings:
        """Read the variables in the module docstring; bad values raise ``ValidationError``."""
        root = Path(environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_ROOT)
        model_dir = root / "model"
        submit = environ.get("SAGEMAKER_SUBMIT_DIRECTORY", "").strip()
        # an s3:// submit dir is the training toolkit's business; serving reads local code only
        code_dir = Path(submit) if submit and "://" not in submit else model_dir / "code"
        workers = int(_number(environ, "SAGEMAKER_MODEL_SERVER_WORKERS", usable_cpus(), 1))
        timeout = _number(environ, "SAGEMAKER_MODEL_SERVER_TIMEOUT", DEFAULT_TIMEOUT_S, 0.001)
        timeout = _number(environ, "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", timeout, 0.001)
        payload_mb = _number(environ, "SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_MAX_PAYLOAD_MB, 0)
        # AWS's toolkit enables multi-model mode for the exact string "true" (reference 4.3)
        multi_model = environ.get("SAGEMAKER_MULTI_MODEL", "").strip().lower() == "true"
        budget_mb = _number(environ, "SHIPYARD_MME_MEMORY_MB", 0.0, 0)
        budget = int(budget_mb * MIB) if budget_mb else 0
        if multi_model and not budget:  # read /proc and /sys only when the budget matters
            budget = default_budget(memory_limit())
        return cls(
            host=environ.get("SHIPYARD_SERVE_HOST", "").strip() or "0.0.0.0",
            port=int(_number(environ, "SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT, 0)),
            workers=workers,
            timeout_s=timeout,
            # 0 is Batch Transform's "no limit" (MaxPayloadInMB=0: chunked, unbounded).
            max_payload_bytes=int(payload_mb * 1024 * 1024) if payload_mb else UNLIMITED_PAYLOAD,
            default_accept=(environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "").strip()
                            or "application/json"),
            model_dir=model_dir,
            code_dir=code_dir,
            program=environ.get("SAGEMAKER_PROGRAM", "").strip() or "inference.py",
            batch_strategy=environ.get("SAGEMAKER_BATCH_STRATEGY", "").strip() or "MULTI_RECORD",
            max_concurrent_transforms=int(
                _number(environ, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", workers, 1)
            ),
            debug_errors=_flag(environ, "SHIPYARD_SERVE_DEBUG_ERRORS"),
            preload=_flag(environ, "SHIPYARD_SERVE_PRELOAD"),
            drain_s=_number(environ, "SHIPYARD_SERVE_DRAIN_SECONDS", DEFAULT_DRAIN_S, 0),
            loop=_choice(environ, "SHIPYARD_SERVE_LOOP", ("auto", "asyncio", "uvloop")),
            multi_model=multi_model,
            models_root=Path(environ.get("SAGEMAKER_MULTI_MODEL_ROOT", "").strip()
                             or root / "models"),
            models_memory_bytes=budget or cls.models_memory_bytes,
        )

    def execution_parameters(self) -> dict[str, object]:
        """The ``GET /execution-parameters`` answer (Batch Transform, reference 4.1)."""
        return {
            "MaxConcurrentTransforms": self.max_concurrent_transforms,
            "BatchStrategy": self.batch_strategy,
            "MaxPayloadInMB": (0 if self.max_payload_bytes >= UNLIMITED_PAYLOAD
                               else max(1, round(self.max_payload_bytes / (1024 * 1024)))),
        }
