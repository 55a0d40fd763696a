"""The in-container toolkit: what runs inside a SageMaker-style training image.

``train`` (console script, :func:`shipyard.toolkit.train.main`) reads ``/opt/ml``, exports the
``SM_*`` variables exactly as AWS's sagemaker-training-toolkit does, installs and runs the
user's entry point, forwards SIGTERM to it and writes the success or failure file.
``shipyard.toolkit.train`` is not imported here, so ``python -m shipyard.toolkit.train`` runs
it fresh.
Standard library only; importing it reads nothing and creates nothing.
"""

from shipyard.toolkit.entry_point import EntryPointType, build_command, entry_point_type
from shipyard.toolkit.environment import (
    Hardware,
    TrainingConfig,
    TrainingEnvironment,
    build_environment,
    detect_hardware,
    read_training_config,
)
from shipyard.toolkit.hyperparameters import (
    BOOL_FLAGS_ENV,
    BOOL_FLAGS_HP,
    decode_hyperparameters,
    split_hyperparameters,
    to_cmd_args,
)
from shipyard.toolkit.process import ChildResult, run_child

__all__ = [
    "BOOL_FLAGS_ENV",
    "BOOL_FLAGS_HP",
    "ChildResult",
    "EntryPointType",
    "Hardware",
    "TrainingConfig",
    "TrainingEnvironment",
    "build_command",
    "build_environment",
    "decode_hyperparameters",
    "detect_hardware",
    "entry_point_type",
    "read_training_config",
    "run_child",
    "split_hyperparameters",
    "to_cmd_args",
]
