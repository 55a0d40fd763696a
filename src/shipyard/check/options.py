"""What ``shipyard check`` is asked to do: which stages, with which fixtures, how long to wait.

One typed object, built once at the edge (the CLI) and passed down. The timeouts default to
SageMaker's own limits so a pass means what it means on AWS; tests shorten them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shipyard.contract import DEFAULT_STOP_GRACE_SECONDS, PROCESSING_PREFIX
from shipyard.contract.serving import SERVING_STOP_GRACE_SECONDS
from shipyard.errors import ValidationError

__all__ = ["CheckOptions", "Payload", "ProcessingInput", "Timeouts"]


def _seconds(default: float, help_text: str) -> float:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Timeouts:
    """Every wait of the dynamic checks, in seconds (the CLI makes one option per field)."""

    train: float = _seconds(300.0, "Longest a fixture training run may take.")
    stop_grace: float = _seconds(
        float(DEFAULT_STOP_GRACE_SECONDS),
        "SIGTERM-to-SIGKILL grace for training (SageMaker: 120).")
    sigterm_after: float = _seconds(
        2.0, "Send SIGTERM to training this long after its first output line.")
    health: float = _seconds(
        240.0, "Time serve has to answer /ping 200 (SageMaker: 4 minutes).")
    ping: float = _seconds(2.0, "Timeout of one /ping (SageMaker: 2).")
    invocation: float = _seconds(60.0, "Timeout of one /invocations (SageMaker: 60).")
    serve_grace: float = _seconds(
        float(SERVING_STOP_GRACE_SECONDS),
        "SIGTERM-to-SIGKILL grace for serving (SageMaker: 30).")
    process: float = _seconds(300.0, "Longest the processing run may take.")


@dataclass(frozen=True)
class Payload:
    """A request body for ``/invocations`` and the headers that describe it."""

    body: bytes
    content_type: str = "application/json"
    accept: str = ""

    @classmethod
    def from_file(cls, path: Path, content_type: str, accept: str = "") -> Payload:
        try:
            return cls(Path(path).read_bytes(), content_type, accept)
        except OSError as exc:
            raise ValidationError(f"cannot read payload {path}: {exc}") from exc


@dataclass(frozen=True)
class ProcessingInput:
    """A host folder placed at ``destination`` (under /opt/ml/processing/)."""

    source: Path
    destination: str


def _check_processing_path(path: str, what: str) -> None:
    if not path.startswith(PROCESSING_PREFIX):
        raise ValidationError(f"{what} {path!r} must be under {PROCESSING_PREFIX} "
                              "(the CreateProcessingJob LocalPath rule)")


@dataclass(frozen=True)
class CheckOptions:
    #: Stages the user asked for; all ``None`` means "infer from the image".
    train: bool | None = None
    serve: bool | None = None
    process: bool | None = None
    #: Only read the image; run nothing.
    static_only: bool = False
    skip: frozenset[str] = frozenset()

    #: Training fixtures: channel name -> host folder (default: a small CSV channel).
    channels: dict[str, Path] = field(default_factory=dict)
    hyperparameters: dict[str, str] = field(default_factory=dict)
    #: The broken input: channels replacing (or added to) the good ones, hyperparameters
    #: over the good ones.
    #: Neither given: every channel is replaced by garbage bytes.
    bad_channels: dict[str, Path] = field(default_factory=dict)
    bad_hyperparameters: dict[str, str] = field(default_factory=dict)
    #: Hyperparameters (over the good ones) that keep training busy well past SIGTERM (an
    #: unsignalled run with them must outlast the signalled one's exit).
    slow_hyperparameters: dict[str, str] = field(default_factory=dict)
    #: Extra environment for every container.
    env: dict[str, str] = field(default_factory=dict)

    #: The model served: a folder or a .tar.gz; default: what train-completes wrote.
    model: Path | None = None
    payload: Payload | None = None
    #: A request that takes a while, for the drain check (default: ``payload``).
    slow_payload: Payload | None = None

    processing_inputs: tuple[ProcessingInput, ...] = ()
    processing_outputs: tuple[str, ...] = ()
    processing_entrypoint: tuple[str, ...] = ()
    processing_arguments: tuple[str, ...] = ()

    max_size_bytes: int = 10 * 1000**3
    timeouts: Timeouts = field(default_factory=Timeouts)
    #: Labels on every container the dynamic checks start (cleanup finds them by these).
    labels: dict[str, str] = field(default_factory=dict)
    #: Where host folders for the runs are made (default: the system temp dir).
    work_dir: Path | None = None

    def __post_init__(self) -> None:
        for item in self.processing_inputs:
            _check_processing_path(item.destination, "processing input")
        for path in self.processing_outputs:
            _check_processing_path(path, "processing output")

    @property
    def explicit_stages(self) -> bool:
        return any(v is not None for v in (self.train, self.serve, self.process))

    @property
    def user_bad_input(self) -> bool:
        return bool(self.bad_channels or self.bad_hyperparameters)
