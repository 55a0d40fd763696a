"""SM_* variables and SM_TRAINING_ENV built from real config files, as AWS names and encodes them."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

from shipyard import toolkit
from shipyard.contract.config_files import training_resource_config, write_json
from shipyard.contract.env import encode_env_value
from shipyard.contract.paths import OptMl
from shipyard.errors import ValidationError
from shipyard.toolkit.environment import (
    Hardware,
    TrainingEnvironment,
    build_environment,
    read_training_config,
)

TRAINING_ENV_KEYS = {
    "additional_framework_parameters", "channel_input_dirs", "current_host",
    "current_instance_group", "current_instance_group_hosts", "current_instance_type",
    "distribution_hosts", "distribution_instance_groups", "framework_module", "hosts",
    "hyperparameters", "input_config_dir", "input_data_config", "input_dir", "instance_groups",
    "instance_groups_dict", "is_hetero", "is_master", "is_modelparallel_enabled",
    "is_smddpmprun_installed", "is_smddprun_installed", "job_name", "log_level",
    "master_hostname", "model_dir", "module_dir", "module_name", "network_interface_name",
    "num_cpus", "num_gpus", "num_neurons", "output_data_dir", "output_dir",
    "output_intermediate_dir", "resource_config", "topology", "user_entry_point",
}  # fmt: skip
HARDWARE = Hardware(num_cpus=4, num_gpus=1)


def test_public_surface_matches_all() -> None:
    # Submodules appear in the namespace once anything imports them: they are not the surface.
    public = {name for name, value in vars(toolkit).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert set(toolkit.__all__) == public


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (True, "true"),
        (["1", ["2", "3", [["6"]]]], '["1",["2","3",[["6"]]]]'),
        ({"a": [1, 3, 4]}, '{"a":[1,3,4]}'),
        (4.0, "4.0"),
        (None, ""),
        ("as-is", "as-is"),
    ],
)
def test_encoding_of_aws_examples(value: Any, encoded: str) -> None:
    assert encode_env_value(value) == encoded


def _write_configs(
    root: Path, hps: dict[str, str], resource: dict[str, Any] | None = None
) -> OptMl:
    layout = OptMl.at(str(root))
    write_json(Path(layout.hyperparameters_file), hps)
    write_json(
        Path(layout.resource_config_file),
        resource or training_resource_config("algo-2", ["algo-1", "algo-2"], "ml.c5.xlarge"),
    )
    write_json(
        Path(layout.input_data_config_file),
        {"training": {"TrainingInputMode": "File"}, "test-set": {"TrainingInputMode": "File"}},
    )
    return layout


def _env(layout: OptMl, environ: dict[str, str] | None = None) -> TrainingEnvironment:
    return build_environment(layout, read_training_config(layout), environ or {}, HARDWARE)


def test_sm_variables_for_an_sdk_payload(tmp_path: Path) -> None:
    layout = _write_configs(
        tmp_path,
        {
            "epochs": "2",
            "learning-rate": "0.001",
            "flag": "true",
            "sagemaker_program": '"train.py"',
            "sagemaker_mpi_enabled": "true",
        },
    )
    env = _env(layout, {"TRAINING_JOB_NAME": "job-7"}).to_env_vars()
    root = str(tmp_path)
    assert env["SM_MODEL_DIR"] == f"{root}/model"
    assert env["SM_CHANNELS"] == '["test-set","training"]'
    assert env["SM_CHANNEL_TRAINING"] == f"{root}/input/data/training"
    assert env["SM_CHANNEL_TEST-SET"] == f"{root}/input/data/test-set"
    assert env["SM_HPS"] == '{"epochs":2,"flag":true,"learning-rate":0.001}'
    assert env["SM_HP_LEARNING-RATE"] == "0.001"
    assert env["SM_HP_FLAG"] == "true"
    assert env["SM_USER_ARGS"] == '["--epochs","2","--flag","True","--learning-rate","0.001"]'
    assert env["SM_CURRENT_HOST"] == "algo-2"
    assert env["SM_HOSTS"] == '["algo-1","algo-2"]'
    assert env["SM_CURRENT_INSTANCE_TYPE"] == "ml.c5.xlarge"
    assert env["SM_CURRENT_INSTANCE_GROUP"] == "homogeneousCluster"
    assert env["SM_CURRENT_INSTANCE_GROUP_HOSTS"] == '["algo-1","algo-2"]'
    assert env["SM_INSTANCE_GROUPS"] == '["homogeneousCluster"]'
    assert env["SM_DISTRIBUTION_INSTANCE_GROUPS"] == '["homogeneousCluster"]'
    assert env["SM_IS_HETERO"] == "false"
    assert env["SM_NETWORK_INTERFACE_NAME"] == "eth0"
    assert env["SM_NUM_CPUS"] == "4"
    assert env["SM_NUM_GPUS"] == "1"
    assert env["SM_NUM_NEURONS"] == "0"
    assert env["SM_LOG_LEVEL"] == "20"
    assert env["SM_MODULE_NAME"] == "train"
    assert env["SM_USER_ENTRY_POINT"] == "train.py"
    assert env["SM_MODULE_DIR"] == f"{root}/code"
    assert env["SM_FRAMEWORK_MODULE"] == ""
    assert env["SM_FRAMEWORK_PARAMS"] == '{"sagemaker_mpi_enabled":true}'
    assert env["SM_OUTPUT_DATA_DIR"] == f"{root}/output/data"
    assert env["SM_OUTPUT_INTERMEDIATE_DIR"] == f"{root}/output/intermediate"
    assert json.loads(env["SM_RESOURCE_CONFIG"])["current_host"] == "algo-2"
    assert "SM_TOPOLOGY" not in env and "SM_CHECKPOINT_CONFIG_FILE" not in env
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert set(training_env) == TRAINING_ENV_KEYS
    assert training_env["master_hostname"] == "algo-1"
    assert training_env["is_master"] is False
    assert training_env["job_name"] == "job-7"
    assert training_env["distribution_hosts"] == ["algo-1", "algo-2"]


def test_program_env_beats_hyperparameter_and_checkpoint_config(tmp_path: Path) -> None:
    layout = _write_configs(tmp_path, {"sagemaker_program": '"hp.py"'})
    write_json(Path(layout.checkpoint_config_file), {"S3Uri": "s3://b/c", "LocalPath": "/x"})
    env = _env(layout, {"SAGEMAKER_PROGRAM": "env.py"}).to_env_vars()
    assert env["SM_USER_ENTRY_POINT"] == "env.py"
    assert env["SM_CHECKPOINT_CONFIG_FILE"] == str(layout.checkpoint_config_file)


def test_hetero_cluster_groups(tmp_path: Path) -> None:
    resource = {
        "current_host": "algo-3",
        "current_group_name": "train2",
        "hosts": ["algo-1", "algo-2", "algo-3"],
        "instance_groups": [
            {"instance_group_name": "train1", "instance_type": "ml.p3.16xlarge",
             "hosts": ["algo-2", "algo-1"]},
            {"instance_group_name": "train2", "instance_type": "ml.p3.8xlarge",
             "hosts": ["algo-3"]},
        ],
        "topology": [{"hostName": "algo-1", "capacityUnitId": "u1"}],
    }  # fmt: skip
    hps = {"sagemaker_distribution_instance_groups": '["train1"]'}
    training = _env(_write_configs(tmp_path, hps, resource))
    env = training.to_env_vars()
    assert env["SM_IS_HETERO"] == "true"
    assert env["SM_CURRENT_INSTANCE_GROUP_HOSTS"] == '["algo-3"]'
    assert env["SM_DISTRIBUTION_INSTANCE_GROUPS"] == '["train1"]'
    assert env["SM_CURRENT_INSTANCE_TYPE"] == "local"  # no current_instance_type in the file
    assert env["SM_TOPOLOGY"] == '[{"capacityUnitId":"u1","hostName":"algo-1"}]'
    assert training.distribution_hosts == ["algo-2", "algo-1"]
    assert training.master_hostname == "algo-2"


def test_missing_program_reads_none_like_aws(tmp_path: Path) -> None:
    env = _env(_write_configs(tmp_path, {})).to_env_vars()
    assert env["SM_MODULE_NAME"] == "None"
    assert env["SM_USER_ENTRY_POINT"] == ""


def test_malformed_json_is_a_validation_error(tmp_path: Path) -> None:
    layout = _write_configs(tmp_path, {})
    Path(layout.hyperparameters_file).write_text("{not json", encoding="utf-8")
    with pytest.raises(ValidationError, match="hyperparameters.json is not valid JSON"):
        read_training_config(layout)


def test_missing_files_default_to_one_local_host(tmp_path: Path) -> None:
    config = read_training_config(OptMl.at(str(tmp_path)))
    assert config.hyperparameters == {} and config.input_data_config == {}
    assert config.resource_config["hosts"] == ["algo-1"]
