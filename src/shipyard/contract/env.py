"""Environment variable names of the contract, and how values are encoded.

Who sets what:
- the platform (control plane) sets ``TRAINING_JOB_NAME``, ``TRAINING_JOB_ARN``,
  ``PROCESSING_JOB_NAME``... and the job's ``Environment`` on the container;
- the toolkit (``train``) sets every ``SM_*`` variable for the user process only, built from
  the config files, exactly as AWS's sagemaker-training-toolkit names and encodes them.
"""

from __future__ import annotations

import json
from typing import Any

# Set by the platform on the container.
TRAINING_JOB_NAME = "TRAINING_JOB_NAME"
TRAINING_JOB_ARN = "TRAINING_JOB_ARN"
PROCESSING_JOB_NAME = "PROCESSING_JOB_NAME"
PROCESSING_JOB_ARN = "PROCESSING_JOB_ARN"
#: Shipyard extension: the contract root when it is not ``/opt/ml`` (same name AWS's toolkit reads).
BASE_DIR = "SAGEMAKER_BASE_DIR"

# Read by the toolkit.
SAGEMAKER_PROGRAM = "SAGEMAKER_PROGRAM"
SAGEMAKER_SUBMIT_DIRECTORY = "SAGEMAKER_SUBMIT_DIRECTORY"
SAGEMAKER_TRAINING_MODULE = "SAGEMAKER_TRAINING_MODULE"
SAGEMAKER_CONTAINER_LOG_LEVEL = "SAGEMAKER_CONTAINER_LOG_LEVEL"
SAGEMAKER_REGION = "SAGEMAKER_REGION"
SAGEMAKER_JOB_NAME = "SAGEMAKER_JOB_NAME"
CURRENT_HOST = "CURRENT_HOST"
S3_ENDPOINT_URL = "S3_ENDPOINT_URL"

# Set by the toolkit for the user process (sagemaker-training-toolkit names).
SM_MODEL_DIR = "SM_MODEL_DIR"
SM_CHANNELS = "SM_CHANNELS"
SM_CHANNEL_PREFIX = "SM_CHANNEL_"
SM_HPS = "SM_HPS"
SM_HP_PREFIX = "SM_HP_"
SM_USER_ARGS = "SM_USER_ARGS"
SM_CURRENT_HOST = "SM_CURRENT_HOST"
SM_HOSTS = "SM_HOSTS"
SM_TRAINING_ENV = "SM_TRAINING_ENV"
SM_NUM_CPUS = "SM_NUM_CPUS"
SM_NUM_GPUS = "SM_NUM_GPUS"
SM_OUTPUT_DATA_DIR = "SM_OUTPUT_DATA_DIR"
SM_CHECKPOINT_CONFIG_FILE = "SM_CHECKPOINT_CONFIG_FILE"

# Hyperparameters the toolkit consumes; every key starting with ``sagemaker_`` is reserved.
RESERVED_HP_PREFIX = "sagemaker_"
RESERVED_HP_KEYS = frozenset({"_tuning_objective_metric", "default_user_module_name"})
HP_PROGRAM = "sagemaker_program"
HP_SUBMIT_DIRECTORY = "sagemaker_submit_directory"
HP_LOG_LEVEL = "sagemaker_container_log_level"
HP_JOB_NAME = "sagemaker_job_name"
HP_REGION = "sagemaker_region"
TOOLKIT_CONSUMED_HPS = frozenset(
    {
        HP_PROGRAM,
        HP_SUBMIT_DIRECTORY,
        "sagemaker_enable_cloudwatch_metrics",
        HP_REGION,
        HP_LOG_LEVEL,
        HP_JOB_NAME,
        "sagemaker_s3_output",
    }
)


def encode_env_value(value: Any) -> str:
    """sagemaker-training-toolkit ``mapping.to_env_vars`` encoding.

    str as-is; bytes latin-1; None empty; anything else compact JSON with sorted keys
    (so True -> ``true``, 4.0 -> ``4.0``, lists and dicts -> compact JSON).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin1")
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def env_key(prefix: str, name: str) -> str:
    """``SM_HP_`` + ``learning-rate`` -> ``SM_HP_LEARNING-RATE`` (hyphens kept, as AWS does)."""
    return prefix + name.upper()
