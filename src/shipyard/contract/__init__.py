"""The SageMaker container contract as code: layout, config files, environment, names.

Pure Python with no dependencies; both the toolkit (inside images) and the platform import it.
"""

from shipyard.contract.config_files import (
    HOMOGENEOUS_GROUP,
    checkpoint_config,
    host_names,
    hyperparameters,
    input_data_config,
    processing_resource_config,
    read_json,
    training_resource_config,
    write_json,
)
from shipyard.contract.env import encode_env_value, env_key
from shipyard.contract.instances import InstanceResources, known_instance_types, resources_for
from shipyard.contract.paths import DEFAULT_ROOT, PROCESSING_PREFIX, OptMl

FAILURE_REASON_MAX = 1024
"""SageMaker returns the first 1,024 characters of /opt/ml/output/failure as FailureReason."""
EXIT_MESSAGE_MAX = 1024
"""Processing: the first 1 KB of /opt/ml/output/message becomes ExitMessage."""
DEFAULT_STOP_GRACE_SECONDS = 120
"""StopTrainingJob / MaxRuntime: SIGTERM, then SIGKILL after 120 s (``docker stop -t 120``)."""
OOM_FAILURE_REASON = (
    "OutOfMemoryError: Please use an instance type with more memory, or reduce the size of "
    "job data processed on an instance."
)
"""SageMaker's FailureReason text for a container killed for exceeding its memory."""

__all__ = [
    "DEFAULT_ROOT",
    "DEFAULT_STOP_GRACE_SECONDS",
    "EXIT_MESSAGE_MAX",
    "FAILURE_REASON_MAX",
    "HOMOGENEOUS_GROUP",
    "OOM_FAILURE_REASON",
    "PROCESSING_PREFIX",
    "InstanceResources",
    "OptMl",
    "checkpoint_config",
    "encode_env_value",
    "env_key",
    "host_names",
    "hyperparameters",
    "input_data_config",
    "known_instance_types",
    "processing_resource_config",
    "read_json",
    "resources_for",
    "training_resource_config",
    "write_json",
]
