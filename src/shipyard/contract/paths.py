"""The ``/opt/ml`` layout, derived from an explicit root (SageMaker's is ``/opt/ml``).

Rules implemented (AWS "How Amazon SageMaker Runs Your Training Image" / processing docs):
channels at ``input/data/<channel>``, config at ``input/config``, the model at ``model``
(tarred into model.tar.gz), ``output/data`` (tarred into output.tar.gz), ``output/failure``
(first 1,024 characters become FailureReason), ``output/message`` for processing
(first 1 KB becomes ExitMessage), processing config at ``config/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath

DEFAULT_ROOT = "/opt/ml"
#: Where processing inputs and outputs must live (CreateProcessingJob LocalPath rule).
PROCESSING_PREFIX = "/opt/ml/processing/"
DEFAULT_CHECKPOINT_DIR = "/opt/ml/checkpoints"


@dataclass(frozen=True)
class OptMl:
    """Paths of the contract under ``root``; pure, so it works for host and container paths."""

    root: PurePosixPath = field(default_factory=lambda: PurePosixPath(DEFAULT_ROOT))

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> OptMl:
        return cls(PurePosixPath(os.fspath(root)))

    @property
    def input_dir(self) -> PurePosixPath:
        return self.root / "input"

    @property
    def input_config_dir(self) -> PurePosixPath:
        return self.root / "input" / "config"

    @property
    def input_data_dir(self) -> PurePosixPath:
        return self.root / "input" / "data"

    def channel_dir(self, channel: str) -> PurePosixPath:
        return self.input_data_dir / channel

    @property
    def hyperparameters_file(self) -> PurePosixPath:
        return self.input_config_dir / "hyperparameters.json"

    @property
    def resource_config_file(self) -> PurePosixPath:
        return self.input_config_dir / "resourceconfig.json"

    @property
    def input_data_config_file(self) -> PurePosixPath:
        return self.input_config_dir / "inputdataconfig.json"

    @property
    def checkpoint_config_file(self) -> PurePosixPath:
        return self.input_config_dir / "checkpointconfig.json"

    @property
    def model_dir(self) -> PurePosixPath:
        return self.root / "model"

    @property
    def code_dir(self) -> PurePosixPath:
        return self.root / "code"

    @property
    def checkpoints_dir(self) -> PurePosixPath:
        return self.root / "checkpoints"

    @property
    def output_dir(self) -> PurePosixPath:
        return self.root / "output"

    @property
    def output_data_dir(self) -> PurePosixPath:
        return self.root / "output" / "data"

    @property
    def output_intermediate_dir(self) -> PurePosixPath:
        return self.root / "output" / "intermediate"

    @property
    def failure_file(self) -> PurePosixPath:
        return self.root / "output" / "failure"

    @property
    def success_file(self) -> PurePosixPath:
        return self.root / "output" / "success"

    @property
    def message_file(self) -> PurePosixPath:
        """Processing: its first 1 KB becomes ``ExitMessage``."""
        return self.root / "output" / "message"

    @property
    def processing_config_dir(self) -> PurePosixPath:
        return self.root / "config"

    @property
    def processing_job_config_file(self) -> PurePosixPath:
        return self.root / "config" / "processingjobconfig.json"

    @property
    def processing_resource_config_file(self) -> PurePosixPath:
        return self.root / "config" / "resourceconfig.json"

    def rebase(self, container_path: str) -> PurePosixPath:
        """Map a path written against ``/opt/ml`` (e.g. a processing LocalPath) onto this root."""
        path = PurePosixPath(container_path)
        default = PurePosixPath(DEFAULT_ROOT)
        # PurePosixPath keeps ``..``: "/opt/ml/x/../../etc" would land outside the root.
        if ".." not in path.parts and (path == default or default in path.parents):
            return self.root / path.relative_to(default)
        raise ValueError(f"{container_path} is not under {DEFAULT_ROOT}")
