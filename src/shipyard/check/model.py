"""What a check is, what it found, and the registry of every check ``shipyard check`` knows.

Each check enforces one rule of SageMaker's container contract (or one Shipyard adds for
safety) and carries the rule's citation and a default "how to fix" text, so a report is
useful without the docs. The registry order is the report order: static checks first, then
training, serving and processing. ``docs/check.md`` documents each one with the same ids.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHECKS",
    "CheckInfo",
    "CheckResult",
    "Report",
    "Stage",
    "Status",
    "check_info",
]


class Status(str, enum.Enum):
    """A check's outcome. Only ``FAIL`` makes the report (and the command) fail."""

    PASS = "PASS"
    FAIL = "FAIL"
    WARN = "WARN"
    SKIP = "SKIP"


class Stage(str, enum.Enum):
    """When a check runs: reading the image, or running it as SageMaker would."""

    STATIC = "static"
    TRAIN = "train"
    SERVE = "serve"
    PROCESS = "process"


@dataclass(frozen=True)
class CheckInfo:
    """One registered check: a stable id (used by ``--skip``, JSON and JUnit), what it
    verifies, the rule it enforces and where that rule is written, and the usual fix."""

    id: str
    stage: Stage
    title: str
    rule: str
    fix: str


@dataclass(frozen=True)
class CheckResult:
    check: CheckInfo
    status: Status
    #: What was seen; for a failure, what exactly is wrong.
    detail: str = ""
    #: How to fix it; empty means the check's default fix (shown for FAIL and WARN).
    fix: str = ""
    seconds: float = 0.0

    @property
    def how_to_fix(self) -> str:
        if self.status not in (Status.FAIL, Status.WARN):
            return ""
        return self.fix or self.check.fix

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.check.id,
            "stage": self.check.stage.value,
            "title": self.check.title,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.how_to_fix,
            "rule": self.check.rule,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class Report:
    """Every registered check's result for one image, in registry order."""

    image: str
    image_id: str
    results: tuple[CheckResult, ...]
    seconds: float = 0.0

    def result(self, check_id: str) -> CheckResult:
        for result in self.results:
            if result.check.id == check_id:
                return result
        raise KeyError(check_id)

    def with_status(self, status: Status) -> list[CheckResult]:
        return [r for r in self.results if r.status is status]

    @property
    def failed(self) -> bool:
        return any(r.status is Status.FAIL for r in self.results)

    def counts(self) -> dict[str, int]:
        return {s.value: len(self.with_status(s)) for s in Status}

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "image_id": self.image_id,
            "passed": not self.failed,
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
            "checks": [r.to_json() for r in self.results],
        }


CHECKS: dict[str, CheckInfo] = {}


def _register(info: CheckInfo) -> CheckInfo:
    if info.id in CHECKS:
        raise ValueError(f"check {info.id} registered twice")
    CHECKS[info.id] = info
    return info


def check_info(check_id: str) -> CheckInfo:
    """The registered check ``check_id``; ``KeyError`` names the known ids."""
    try:
        return CHECKS[check_id]
    except KeyError:
        raise KeyError(f"no check {check_id!r}; known: {', '.join(CHECKS)}") from None


_TRAIN_DOC = 'AWS "How Amazon SageMaker Runs Your Training Image"'
_SERVE_DOC = 'AWS "Use Your Own Inference Code with Hosting Services"'

ENTRYPOINT_EXEC_FORM = _register(CheckInfo(
    "entrypoint-exec-form", Stage.STATIC,
    "ENTRYPOINT in exec form (or none, with train/serve on PATH)",
    f"{_TRAIN_DOC}: SageMaker runs `docker run IMAGE train` (`serve` for hosting), which "
    "replaces CMD; use the exec form of ENTRYPOINT so that SIGTERM reaches your program "
    "(reference toolkits.md 2.1, 2.11, 4.1).",
    'Write ENTRYPOINT as a JSON array, e.g. ENTRYPOINT ["python3", "/opt/program/main.py"], '
    "or drop it and install executables named train and serve on PATH.",
))
ENTRYPOINT_NO_WRAPPER = _register(CheckInfo(
    "entrypoint-no-wrapper", Stage.STATIC,
    "No tini, dumb-init or shell script in front of the program",
    f"{_TRAIN_DOC}: `tini` cannot be the entry point (it is \"confused by train and "
    "serve\"); a shell that is PID 1 does not forward SIGTERM, so StopTrainingJob and "
    "scale-in end in SIGKILL (reference toolkits.md 2.11; training toolkit #125, #173, "
    "deep-learning-containers #632).",
    "Make your program PID 1: ENTRYPOINT [\"/path/to/program\"]. Drop tini/dumb-init; if a "
    "shell script must run first, end it with exec \"$@\" (or exec your program).",
))
USER_NON_ROOT = _register(CheckInfo(
    "user-non-root", Stage.STATIC,
    "Runs as a non-root user",
    "Not a SageMaker requirement, so root is a warning: a security default. AWS ECS best "
    "practices: \"You should run containers as a non-root user. By default, containers run "
    "as the root user unless the USER directive is included in your Dockerfile.\" SageMaker "
    "mounts /opt/ml writable for the image's user either way (sagemaker-inference-toolkit "
    "#72).",
    "Create a user and switch to it at the end of the Dockerfile, e.g. "
    "RUN useradd -u 1000 -m app and USER 1000:1000.",
))
OPT_ML_EMPTY = _register(CheckInfo(
    "opt-ml-empty", Stage.STATIC,
    "Nothing baked under /opt/ml",
    f"{_TRAIN_DOC}: /opt/ml is reserved: SageMaker mounts the job's input, model and output "
    "there, so files baked into the image under /opt/ml are hidden or replaced at run time "
    "(reference toolkits.md 2.2, 2.11).",
    "Put code and assets elsewhere (e.g. /opt/program) and point SAGEMAKER_SUBMIT_DIRECTORY "
    "or your entry point at them; ship models through ModelDataUrl, not the image.",
))
NO_CREDENTIALS_ENV = _register(CheckInfo(
    "no-credentials-env", Stage.STATIC,
    "No AWS credentials in the image's environment",
    "SageMaker gives a container its role's temporary credentials at run time (execution "
    "role); keys in ENV are readable by anyone who can pull the image (`docker inspect`) "
    "and override the role. AWS key ids start with AKIA (long-term) or ASIA (temporary).",
    "Remove AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN from ENV and ARG; "
    "use the job's execution role. Rotate the exposed key.",
))
NO_CREDENTIALS_LAYERS = _register(CheckInfo(
    "no-credentials-layers", Stage.STATIC,
    "No AWS credentials in any layer",
    "Every layer of an image is shipped with it: a file removed by a later RUN rm is still "
    "in the earlier layer (`docker save`). Credentials in an image leak to everyone who can "
    "pull it; SageMaker provides the execution role's credentials at run time instead.",
    "Never COPY .aws/ or key files into a build; use build secrets (RUN --mount=type=secret) "
    "or the execution role, rebuild without the file, and rotate the exposed key.",
))
CAPABILITY_LABELS = _register(CheckInfo(
    "capability-labels", Stage.STATIC,
    "SageMaker capability labels are well formed and the image can serve",
    f"{_SERVE_DOC}: multi-container and pipeline hosting require the label "
    "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true; multi-model endpoints "
    "require com.amazonaws.sagemaker.capabilities.multi-models=true (reference 4.1). "
    "Only the exact value \"true\" declares the capability, and only an image that "
    "`docker run IMAGE serve` starts a server in can have it.",
    'Give capability labels the value "true" (or remove them), and only on images that serve.',
))
IMAGE_SIZE = _register(CheckInfo(
    "image-size", Stage.STATIC,
    "Image size under the threshold",
    "Shipyard's rule: every instance pulls the whole image before the job or endpoint "
    "starts, so size is start-up time (and autoscaling lag). The threshold is --max-size-gb.",
    "Use a slimmer base, install with --no-cache-dir, drop build tools in a multi-stage "
    "build, and keep data and models out of the image.",
))
TRAIN_COMPLETES = _register(CheckInfo(
    "train-completes", Stage.TRAIN,
    "train with fixture channels and hyperparameters writes a model and exits 0",
    f"{_TRAIN_DOC}: exit code 0 means Completed; /opt/ml/model is archived into "
    "model.tar.gz and uploaded as the model artifact (reference toolkits.md 2.10).",
    "Run the job locally (shipyard train IMAGE --channel ...) and read its log; write the "
    "model under /opt/ml/model (SM_MODEL_DIR).",
))
TRAIN_FAILURE_FILE = _register(CheckInfo(
    "train-failure-file", Stage.TRAIN,
    "A broken input gives a failure file and a non-zero exit",
    f"{_TRAIN_DOC}: a non-zero exit code means Failed, and the first 1,024 characters of "
    "/opt/ml/output/failure become the job's FailureReason (reference toolkits.md 2.10).",
    "On error, write a short reason to /opt/ml/output/failure and exit non-zero (the "
    "training toolkit does both when your script raises).",
))
TRAIN_SIGTERM = _register(CheckInfo(
    "train-sigterm", Stage.TRAIN,
    "SIGTERM during training reaches the program; the container exits in the grace period",
    f"{_TRAIN_DOC}: StopTrainingJob and MaxRuntimeInSeconds send SIGTERM, then SIGKILL 120 s "
    "later (`docker stop -t 120`; reference toolkits.md 2.11).",
    "Make the training program PID 1 (exec-form ENTRYPOINT) or forward SIGTERM to it; do not "
    "ignore SIGTERM: save a checkpoint and exit.",
))
SERVE_PING_READY = _register(CheckInfo(
    "serve-ping-ready", Stage.SERVE,
    "/ping answers 200 within the health-check timeout, and only once ready",
    f"{_SERVE_DOC}: /ping must answer 200 (2 s per ping) within 4 minutes of start-up, "
    "and the endpoint is put in service when it does; a /ping that says 200 before the "
    "model is loaded sends traffic to a container that fails it (reference 4.1; "
    "sagemaker-inference-toolkit #138, MMS #1027).",
    "Answer /ping with 503 until the model is loaded and warm, then 200.",
))
SERVE_INVOCATIONS = _register(CheckInfo(
    "serve-invocations", Stage.SERVE,
    "/invocations answers the sample payload",
    f"{_SERVE_DOC}: POST /invocations with the request's Content-Type and Accept; answer "
    "within 60 s (reference 4.1).",
    "Run the server locally (shipyard deploy / docker run IMAGE serve) and POST the payload; "
    "read the container log for the error.",
))
SERVE_BIND_TO_PORT = _register(CheckInfo(
    "serve-bind-to-port", Stage.SERVE,
    "Honours SAGEMAKER_BIND_TO_PORT when labelled accept-bind-to-port=true",
    f"{_SERVE_DOC}: a container labelled "
    "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true must listen on the port "
    "in SAGEMAKER_BIND_TO_PORT instead of 8080 (inference pipelines, multi-container "
    "endpoints; reference 4.1).",
    "Read SAGEMAKER_BIND_TO_PORT (default 8080) and bind to it, or remove the label.",
))
SERVE_SIGTERM_DRAIN = _register(CheckInfo(
    "serve-sigterm-drain", Stage.SERVE,
    "SIGTERM drains: the request in flight completes and the container exits within 30 s",
    f"{_SERVE_DOC}: on scale-in or update SageMaker sends SIGTERM, then SIGKILL 30 s later "
    "(reference 4.1).",
    "On SIGTERM stop accepting, finish the requests in flight, then exit; make the server "
    "PID 1 (or forward the signal).",
))
SERVE_MULTI_MODEL = _register(CheckInfo(
    "serve-multi-model", Stage.SERVE,
    "Answers the /models API when labelled multi-models=true",
    "AWS multi-model endpoint contract (mms-container-apis): a container labelled "
    "com.amazonaws.sagemaker.capabilities.multi-models=true serves POST/GET/DELETE /models "
    "and POST /models/<name>/invoke (reference 4.8).",
    "Implement the /models API (SAGEMAKER_MULTI_MODEL=true in Shipyard's serve) or remove "
    "the label.",
))
PROCESS_OUTPUTS = _register(CheckInfo(
    "process-outputs", Stage.PROCESS,
    "Processing with the given inputs writes its outputs and exits 0",
    "AWS processing container contract: inputs are placed at each ProcessingInput's "
    "LocalPath and every ProcessingOutput's LocalPath (under /opt/ml/processing/) is uploaded "
    "at the end; all containers exiting 0 means Completed (reference toolkits.md 3.5).",
    "Write results under the output LocalPath you declared, and exit 0.",
))
