"""The training environment: config files in, ``SM_*`` variables and ``SM_TRAINING_ENV`` out.

Rules implemented (sagemaker-training-toolkit ``environment.Environment`` and
``to_env_vars``; AWS "How Amazon SageMaker Provides Training Information"):

- reads ``input/config/hyperparameters.json``, ``resourceconfig.json``, ``inputdataconfig.json``;
- every ``SM_*`` name is ``"SM_" + key.upper()`` (hyphens kept) and every value is encoded by
  ``contract.env.encode_env_value`` (strings as is, everything else compact sorted JSON);
- ``SM_TRAINING_ENV`` is the JSON of every ``Environment`` property;
- ``SAGEMAKER_PROGRAM`` env beats hyperparameter ``sagemaker_program``; the current instance
  group comes from ``current_group_name`` (default ``homogeneousCluster``); the distribution
  groups from ``sagemaker_distribution_instance_groups`` or, when a distribution flag is on,
  the current group; the master is the first distribution host (else the first host).

Building the environment is pure: files are read by :func:`read_training_config` and the
hardware is probed by :func:`detect_hardware`, both called explicitly by ``train``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.contract import env as names
from shipyard.contract.config_files import HOMOGENEOUS_GROUP, NETWORK_INTERFACE, read_json
from shipyard.contract.env import encode_env_value, env_key
from shipyard.contract.paths import OptMl
from shipyard.errors import ValidationError
from shipyard.toolkit.hyperparameters import (
    BOOL_STYLE_VALUE,
    decode_hyperparameters,
    split_hyperparameters,
    to_cmd_args,
)

logger = logging.getLogger("shipyard.toolkit")

#: Hyperparameters that turn distribution on
#: (``get_distribution_instance_groups_from_resource_config``).
DISTRIBUTION_FLAGS = (
    "sagemaker_mpi_enabled",
    "sagemaker_parameter_server_enabled",
    "sagemaker_distributed_dataparallel_enabled",
    "sagemaker_pytorch_ddp_enabled",
    "sagemaker_torch_distributed_enabled",
    "sagemaker_pytorch_xla_multi_worker_enabled",
    "sagemaker_multi_worker_mirrored_strategy_enabled",
)
#: The toolkit hard-codes the NeuronCore count of this type (``neuron-ls`` undercounts it).
_TRN2_48XLARGE_NEURONS = 64


@dataclass(frozen=True)
class Hardware:
    """What the container can use; probed once by :func:`detect_hardware`."""

    num_cpus: int = 1
    num_gpus: int = 0
    num_neurons: int = 0
    smddprun_installed: bool = False
    smddpmprun_installed: bool = False


def _count_gpus() -> int:
    # environment.num_gpus: lines starting "GPU " in `nvidia-smi --list-gpus`; 0 on any error.
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _count_neurons(instance_type: str) -> int:
    if instance_type == "ml.trn2.48xlarge":
        return _TRN2_48XLARGE_NEURONS
    if shutil.which("neuron-ls") is None:
        return 0
    try:
        out = subprocess.run(
            ["neuron-ls", "-j"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        return sum(int(device.get("nc_count", 0)) for device in json.loads(out))
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, AttributeError):
        return 0


def detect_hardware(instance_type: str = "local") -> Hardware:
    """Probe CPUs, GPUs (``nvidia-smi``), NeuronCores (``neuron-ls``) and SMDDP launchers."""
    return Hardware(
        num_cpus=os.cpu_count() or 1,
        num_gpus=_count_gpus(),
        num_neurons=_count_neurons(instance_type),
        smddprun_installed=shutil.which("smddprun") is not None,
        smddpmprun_installed=shutil.which("smddpmprun") is not None,
    )


@dataclass(frozen=True)
class TrainingConfig:
    """The three config files as read (hyperparameter values still raw strings)."""

    hyperparameters: dict[str, Any] = field(default_factory=dict)
    resource_config: dict[str, Any] = field(default_factory=dict)
    input_data_config: dict[str, Any] = field(default_factory=dict)
    checkpoint_config_present: bool = False


def _read_object(path: Path, default: dict[str, Any]) -> dict[str, Any]:
    try:
        document = read_json(path, default)
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise ValidationError(f"{path} is not valid JSON: {exc}") from exc
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise ValidationError(f"{path} must hold a JSON object, not {type(document).__name__}")
    return document


def default_resource_config() -> dict[str, Any]:
    """A single-host config for runs without resourceconfig.json (AWS's local fallback)."""
    host = "algo-1"
    return {
        "current_host": host,
        "current_instance_type": "local",
        "current_group_name": HOMOGENEOUS_GROUP,
        "hosts": [host],
        "instance_groups": [
            {"instance_group_name": HOMOGENEOUS_GROUP, "instance_type": "local", "hosts": [host]}
        ],
        "network_interface_name": NETWORK_INTERFACE,
    }


def read_training_config(layout: OptMl) -> TrainingConfig:
    """Read the config files; missing files default, malformed ones raise ``ValidationError``."""
    resource_path = Path(layout.resource_config_file)
    resource = _read_object(resource_path, {})
    if not resource:
        logger.info("%s not found: using a single-host default", resource_path)
        resource = default_resource_config()
    if "current_host" not in resource or "hosts" not in resource:
        raise ValidationError(f"{resource_path} must name current_host and hosts")
    return TrainingConfig(
        hyperparameters=_read_object(Path(layout.hyperparameters_file), {}),
        resource_config=resource,
        input_data_config=_read_object(Path(layout.input_data_config_file), {}),
        checkpoint_config_present=Path(layout.checkpoint_config_file).is_file(),
    )


def _module_name(program: str | None) -> str:
    # Environment._parse_module_name over str(program): a missing program reads "None".
    text = str(program)
    return text.removesuffix(".py")


@dataclass(frozen=True)
class TrainingEnvironment:
    """A read-only snapshot of what the user process is told, as AWS's ``Environment``."""

    layout: OptMl
    hyperparameters: dict[str, Any]
    additional_framework_parameters: dict[str, Any]
    toolkit_parameters: dict[str, Any]
    resource_config: dict[str, Any]
    input_data_config: dict[str, Any]
    hardware: Hardware
    user_entry_point: str | None
    module_dir: str
    framework_module: str | None
    job_name: str | None
    log_level: Any
    is_modelparallel_enabled: bool
    checkpoint_config_present: bool = False
    bool_style: str = BOOL_STYLE_VALUE

    @property
    def current_host(self) -> str:
        return str(self.resource_config["current_host"])

    @property
    def hosts(self) -> list[str]:
        return list(self.resource_config["hosts"])

    @property
    def current_instance_type(self) -> str:
        return str(self.resource_config.get("current_instance_type", "local"))

    @property
    def current_instance_group(self) -> str:
        return str(self.resource_config.get("current_group_name", HOMOGENEOUS_GROUP))

    @property
    def network_interface_name(self) -> str:
        return str(self.resource_config.get("network_interface_name", NETWORK_INTERFACE))

    @property
    def _groups(self) -> list[dict[str, Any]]:
        return list(self.resource_config.get("instance_groups") or [])

    @property
    def instance_groups(self) -> list[str]:
        return [group["instance_group_name"] for group in self._groups]

    @property
    def instance_groups_dict(self) -> dict[str, dict[str, Any]]:
        return {group["instance_group_name"]: group for group in self._groups}

    @property
    def current_instance_group_hosts(self) -> list[str]:
        for group in self._groups:
            if group["instance_group_name"] == self.current_instance_group:
                return list(group["hosts"])
        return []

    @property
    def distribution_instance_groups(self) -> list[str]:
        explicit = self.additional_framework_parameters.get(
            "sagemaker_distribution_instance_groups"
        )
        if explicit is not None:
            return list(explicit)
        if any(self.additional_framework_parameters.get(flag) for flag in DISTRIBUTION_FLAGS):
            return [self.current_instance_group]
        return []

    @property
    def distribution_hosts(self) -> list[str]:
        if not self._groups:
            return self.hosts  # local mode: every host
        wanted = self.distribution_instance_groups
        return [h for g in self._groups if g["instance_group_name"] in wanted for h in g["hosts"]]

    @property
    def is_hetero(self) -> bool:
        return len(self._groups) > 1

    @property
    def master_hostname(self) -> str:
        hosts = self.distribution_hosts or self.hosts
        return hosts[0]

    @property
    def is_master(self) -> bool:
        return self.current_host == self.master_hostname

    @property
    def module_name(self) -> str:
        return _module_name(self.user_entry_point)

    @property
    def channel_input_dirs(self) -> dict[str, str]:
        return {ch: str(self.layout.channel_dir(ch)) for ch in self.input_data_config}

    @property
    def topology(self) -> Any:
        return self.resource_config.get("topology")

    def to_cmd_args(self) -> list[str]:
        """The user's arguments (``SM_USER_ARGS``)."""
        return to_cmd_args(self.hyperparameters, self.bool_style)

    def training_env(self) -> dict[str, Any]:
        """Every ``Environment`` property, the document behind ``SM_TRAINING_ENV``."""
        layout = self.layout
        return {
            "additional_framework_parameters": self.additional_framework_parameters,
            "channel_input_dirs": self.channel_input_dirs,
            "current_host": self.current_host,
            "current_instance_group": self.current_instance_group,
            "current_instance_group_hosts": self.current_instance_group_hosts,
            "current_instance_type": self.current_instance_type,
            "distribution_hosts": self.distribution_hosts,
            "distribution_instance_groups": self.distribution_instance_groups,
            "framework_module": self.framework_module,
            "hosts": self.hosts,
            "hyperparameters": self.hyperparameters,
            "input_config_dir": str(layout.input_config_dir),
            "input_data_config": self.input_data_config,
            "input_dir": str(layout.input_dir),
            "instance_groups": self.instance_groups,
            "instance_groups_dict": self.instance_groups_dict,
            "is_hetero": self.is_hetero,
            "is_master": self.is_master,
            "is_modelparallel_enabled": self.is_modelparallel_enabled,
            "is_smddpmprun_installed": self.hardware.smddpmprun_installed,
            "is_smddprun_installed": self.hardware.smddprun_installed,
            "job_name": self.job_name,
            "log_level": self.log_level,
            "master_hostname": self.master_hostname,
            "model_dir": str(layout.model_dir),
            "module_dir": self.module_dir,
            "module_name": self.module_name,
            "network_interface_name": self.network_interface_name,
            "num_cpus": self.hardware.num_cpus,
            "num_gpus": self.hardware.num_gpus,
            "num_neurons": self.hardware.num_neurons,
            "output_data_dir": str(layout.output_data_dir),
            "output_dir": str(layout.output_dir),
            "output_intermediate_dir": str(layout.output_intermediate_dir),
            "resource_config": self.resource_config,
            "topology": self.topology,
            "user_entry_point": self.user_entry_point,
        }

    def to_env_vars(self) -> dict[str, str]:
        """``Environment.to_env_vars`` + ``mapping.to_env_vars``: every ``SM_*`` variable."""
        layout = self.layout
        values: dict[str, Any] = {
            "hosts": self.hosts,
            "network_interface_name": self.network_interface_name,
            "hps": self.hyperparameters,
            "user_entry_point": self.user_entry_point,
            "framework_params": self.additional_framework_parameters,
            "resource_config": self.resource_config,
            "input_data_config": self.input_data_config,
            "output_data_dir": str(layout.output_data_dir),
            "channels": sorted(self.channel_input_dirs),
            "current_host": self.current_host,
            "current_instance_type": self.current_instance_type,
            "current_instance_group": self.current_instance_group,
            "current_instance_group_hosts": self.current_instance_group_hosts,
            "instance_groups": self.instance_groups,
            "instance_groups_dict": self.instance_groups_dict,
            "distribution_instance_groups": self.distribution_instance_groups,
            "is_hetero": self.is_hetero,
            "module_name": self.module_name,
            "log_level": self.log_level,
            "framework_module": self.framework_module,
            "input_dir": str(layout.input_dir),
            "input_config_dir": str(layout.input_config_dir),
            "output_dir": str(layout.output_dir),
            "num_cpus": self.hardware.num_cpus,
            "num_gpus": self.hardware.num_gpus,
            "num_neurons": self.hardware.num_neurons,
            "model_dir": str(layout.model_dir),
            "module_dir": self.module_dir,
            "training_env": self.training_env(),
            "user_args": self.to_cmd_args(),
            "output_intermediate_dir": str(layout.output_intermediate_dir),
        }
        if self.topology:
            values["topology"] = self.topology
        # Channels, then hyperparameters, overwrite fixed names on a clash, as in AWS's dict.
        for channel, path in self.channel_input_dirs.items():
            values[f"channel_{channel}"] = path
        for key, value in self.hyperparameters.items():
            values[f"hp_{key}"] = value
        env = {env_key("SM_", key): encode_env_value(value) for key, value in values.items()}
        if self.checkpoint_config_present:
            env[names.SM_CHECKPOINT_CONFIG_FILE] = str(layout.checkpoint_config_file)
        return env


def build_environment(
    layout: OptMl,
    config: TrainingConfig,
    environ: Mapping[str, str],
    hardware: Hardware,
    bool_style: str = BOOL_STYLE_VALUE,
) -> TrainingEnvironment:
    """Assemble the environment from already-read config, the process env and the hardware."""
    split = split_hyperparameters(decode_hyperparameters(config.hyperparameters))
    program = environ.get(names.SAGEMAKER_PROGRAM) or split.toolkit.get(names.HP_PROGRAM)
    submit = submit_source(split.toolkit, environ)
    log_level: Any = split.toolkit.get(names.HP_LOG_LEVEL)
    if log_level is None:
        log_level = decode_value_or_default(environ.get(names.SAGEMAKER_CONTAINER_LOG_LEVEL), 20)
    mp_parameters = environ.get("SM_HP_MP_PARAMETERS")
    return TrainingEnvironment(
        layout=layout,
        hyperparameters=split.user,
        additional_framework_parameters=split.framework,
        toolkit_parameters=split.toolkit,
        resource_config=config.resource_config,
        input_data_config=config.input_data_config,
        hardware=hardware,
        user_entry_point=None if program is None else str(program),
        module_dir=str(submit) if submit else str(layout.code_dir),
        framework_module=environ.get(names.SAGEMAKER_TRAINING_MODULE) or None,
        job_name=environ.get(names.TRAINING_JOB_NAME),
        log_level=log_level,
        is_modelparallel_enabled=bool(mp_parameters) and mp_parameters != "{}",
        checkpoint_config_present=config.checkpoint_config_present,
        bool_style=bool_style,
    )


def submit_source(toolkit_hps: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """Where the code comes from: hyperparameter ``sagemaker_submit_directory``, then env
    ``SAGEMAKER_SUBMIT_DIRECTORY`` (AWS reads the env but ignores it), else None (the code dir)."""
    value = toolkit_hps.get(names.HP_SUBMIT_DIRECTORY) or environ.get(
        names.SAGEMAKER_SUBMIT_DIRECTORY
    )
    return str(value) if value else None


def decode_value_or_default(raw: str | None, default: Any) -> Any:
    """An env value decoded as JSON (``"10"`` -> 10), ``default`` when unset or empty."""
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        return raw
