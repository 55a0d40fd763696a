"""The pure contract: config files, names, instance types, the /opt/ml layout, SM_* encoding.

Expected documents are AWS's own examples (docs/reference/toolkits.md section 3 and the
sagemaker-training-toolkit tests), so a drift from SageMaker fails here first.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from shipyard.contract import (
    DEFAULT_ROOT,
    HOMOGENEOUS_GROUP,
    InstanceResources,
    OptMl,
    checkpoint_config,
    encode_env_value,
    env_key,
    host_names,
    hyperparameters,
    input_data_config,
    known_instance_types,
    processing_resource_config,
    read_json,
    resources_for,
    training_resource_config,
    write_json,
)
from shipyard.contract.instances import GIB
from shipyard.contract.names import check_env_value, constraint_error
from shipyard.errors import ValidationError

# -- config files ------------------------------------------------------------------------------


def test_training_resource_config_matches_production_document() -> None:
    # toolkits.md 3.2: the fields production jobs carry, plus "topology": null on newer jobs.
    expected = {
        "current_host": "algo-1",
        "current_instance_type": "ml.c5.xlarge",
        "current_group_name": "homogeneousCluster",
        "hosts": ["algo-1"],
        "instance_groups": [
            {
                "instance_group_name": "homogeneousCluster",
                "instance_type": "ml.c5.xlarge",
                "hosts": ["algo-1"],
            }
        ],
        "network_interface_name": "eth0",
        "topology": None,
    }
    assert training_resource_config("algo-1", host_names(1), "ml.c5.xlarge") == expected
    assert HOMOGENEOUS_GROUP == "homogeneousCluster"
    # It must survive the JSON round trip the container performs.
    assert json.loads(json.dumps(expected)) == expected


def test_training_resource_config_for_a_cluster_names_every_host() -> None:
    config = training_resource_config("algo-2", host_names(3), "ml.m5.large")
    assert config["current_host"] == "algo-2"
    assert config["hosts"] == ["algo-1", "algo-2", "algo-3"]
    assert config["instance_groups"][0]["hosts"] == ["algo-1", "algo-2", "algo-3"]
    # The document holds copies: mutating it must not change the caller's list.
    hosts = ["algo-1", "algo-2"]
    doc = training_resource_config("algo-1", hosts, "ml.m5.large")
    doc["hosts"].append("algo-9")
    assert hosts == ["algo-1", "algo-2"]


def test_host_names_are_sorted_lexicographically_like_sagemaker() -> None:
    assert host_names(1) == ["algo-1"]
    assert host_names(3) == ["algo-1", "algo-2", "algo-3"]
    # SageMaker sorts hosts as strings, so algo-10 comes before algo-2.
    assert host_names(11)[:3] == ["algo-1", "algo-10", "algo-11"]
    assert len(host_names(11)) == 11


def test_processing_resource_config_holds_only_host_names() -> None:
    assert processing_resource_config("algo-1", ["algo-1", "algo-2", "algo-3"]) == {
        "current_host": "algo-1",
        "hosts": ["algo-1", "algo-2", "algo-3"],
    }


def test_input_data_config_matches_aws_example() -> None:
    channels = [
        {
            "ChannelName": "train",
            "ContentType": "trainingContentType",
            "DataSource": {"S3DataSource": {"S3Uri": "s3://b/train",
                                            "S3DataType": "S3Prefix",
                                            "S3DataDistributionType": "FullyReplicated"}},
        },
        {"ChannelName": "validation",
         "DataSource": {"S3DataSource": {"S3Uri": "s3://b/val", "S3DataType": "S3Prefix"}}},
    ]
    # toolkits.md 3.3, verbatim.
    assert input_data_config(channels) == {
        "train": {
            "ContentType": "trainingContentType",
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        },
        "validation": {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        },
    }


def test_input_data_config_per_channel_overrides() -> None:
    channels = [
        {
            "ChannelName": "train",
            "InputMode": "FastFile",
            "RecordWrapperType": "RecordIO",
            "DataSource": {"S3DataSource": {"S3Uri": "s3://b/t",
                                            "S3DataDistributionType": "ShardedByS3Key"}},
        },
        # A file-system source has no S3 distribution: SageMaker forces FullyReplicated.
        {"ChannelName": "fs", "DataSource": {"FileSystemDataSource": {"DirectoryPath": "/x"}}},
    ]
    config = input_data_config(channels, default_input_mode="Pipe")
    assert config["train"] == {
        "TrainingInputMode": "FastFile",
        "S3DistributionType": "ShardedByS3Key",
        "RecordWrapperType": "RecordIO",
    }
    assert config["fs"] == {
        "TrainingInputMode": "Pipe",
        "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "None",
    }
    assert input_data_config([]) == {}


def test_checkpoint_config_defaults_local_path() -> None:
    assert checkpoint_config({"S3Uri": "s3://b/ckpt"}) == {
        "S3Uri": "s3://b/ckpt",
        "LocalPath": "/opt/ml/checkpoints/",
    }
    assert checkpoint_config({"S3Uri": "s3://b/ckpt", "LocalPath": "/data/ckpt"}) == {
        "S3Uri": "s3://b/ckpt",
        "LocalPath": "/data/ckpt",
    }


def test_hyperparameters_are_a_flat_map_of_strings() -> None:
    # toolkits.md 3.1: the AWS doc example, and SDK framework values already JSON-encoded.
    doc = {"num_round": "128", "eta": "0.001", "sagemaker_program": '"train.py"'}
    assert hyperparameters(doc) == doc
    assert hyperparameters({"epochs": 2, "lr": 0.5}) == {"epochs": "2", "lr": "0.5"}
    assert hyperparameters(None) == {}
    assert hyperparameters({}) == {}
    assert all(isinstance(v, str) for v in hyperparameters({"a": 1, "b": None}).values())


def test_write_json_writes_and_replaces_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "input" / "config" / "hyperparameters.json"
    write_json(target, {"a": "1"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": "1"}
    write_json(target, {"b": "2"})
    assert read_json(target) == {"b": "2"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["hyperparameters.json"]


def test_write_json_failure_keeps_the_old_document(tmp_path: Path) -> None:
    target = tmp_path / "resourceconfig.json"
    write_json(target, {"current_host": "algo-1"})
    with pytest.raises(TypeError):
        write_json(target, {"bad": object()})
    assert read_json(target) == {"current_host": "algo-1"}
    assert [p.name for p in tmp_path.iterdir()] == ["resourceconfig.json"]


def test_write_json_is_atomic_for_readers_and_concurrent_writers(tmp_path: Path) -> None:
    target = tmp_path / "inputdataconfig.json"
    write_json(target, {"n": -1, "pad": ""})
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(k: int) -> None:
        try:
            for i in range(40):
                # Large enough that a non-atomic write is seen half-done by the reader.
                write_json(target, {"n": k * 1000 + i, "pad": "x" * 200_000})
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            while not done.is_set():
                doc = json.loads(target.read_text(encoding="utf-8"))
                assert isinstance(doc["n"], int)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["inputdataconfig.json"]


def test_read_json_missing_file_gives_default(tmp_path: Path) -> None:
    assert read_json(tmp_path / "nope.json") is None
    assert read_json(tmp_path / "nope.json", default={}) == {}


# -- names -------------------------------------------------------------------------------------
# The rules of names themselves are botocore's model's: tests/test_api_validation.py.


def test_constraint_error_reads_as_aws_writes_it() -> None:
    assert constraint_error(0, "resourceConfig.instanceCount", "Member must have value between "
                            "1 and 100").message == (
        "1 validation error detected: Value '0' at 'resourceConfig.instanceCount' failed to "
        "satisfy constraint: Member must have value between 1 and 100")


def test_environment_values_cannot_hold_nul() -> None:
    assert check_env_value("A", "x y\n") == "x y\n"
    with pytest.raises(ValidationError, match="Environment value of A contains a NUL"):
        check_env_value("A", "x\x00y")


# -- instances ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [
        ("ml.c5.xlarge", InstanceResources(4.0, 8 * GIB, 0)),
        ("ml.m5.large", InstanceResources(2.0, 8 * GIB, 0)),
        ("ml.c4.xlarge", InstanceResources(4.0, int(7.5 * GIB), 0)),
        ("ml.p3.2xlarge", InstanceResources(8.0, 61 * GIB, 1)),
        ("ml.g5.48xlarge", InstanceResources(192.0, 768 * GIB, 8)),
        ("local", InstanceResources(None, None, 0)),
        ("local_gpu", InstanceResources(None, None, 1)),
        # Well formed but unknown (a type newer than this table): accepted, without limits.
        ("ml.m99.xlarge", InstanceResources(None, None, 0)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_resources_for_known_and_open_types(instance_type: str,
                                            expected: InstanceResources) -> None:
    assert resources_for(instance_type) == expected


@pytest.mark.parametrize(
    "garbage", ["", "c5.xlarge", "ml.c5", "ML.C5.XLARGE", "ml..xlarge", "ml.c5.xlarge ", "big"],
)
def test_resources_for_garbage_is_none(garbage: str) -> None:
    assert resources_for(garbage) is None


def test_known_instance_types_are_sorted_and_resolvable() -> None:
    types = known_instance_types()
    assert types == sorted(types)
    assert "ml.m5.xlarge" in types
    for name in types:
        resources = resources_for(name)
        assert resources is not None and resources.cpus and resources.memory_bytes, name


# -- paths -------------------------------------------------------------------------------------

_LAYOUT: dict[str, str] = {
    "input_dir": "input",
    "input_config_dir": "input/config",
    "input_data_dir": "input/data",
    "hyperparameters_file": "input/config/hyperparameters.json",
    "resource_config_file": "input/config/resourceconfig.json",
    "input_data_config_file": "input/config/inputdataconfig.json",
    "checkpoint_config_file": "input/config/checkpointconfig.json",
    "model_dir": "model",
    "code_dir": "code",
    "checkpoints_dir": "checkpoints",
    "output_dir": "output",
    "output_data_dir": "output/data",
    "output_intermediate_dir": "output/intermediate",
    "failure_file": "output/failure",
    "success_file": "output/success",
    "message_file": "output/message",
    "processing_config_dir": "config",
    "processing_job_config_file": "config/processingjobconfig.json",
    "processing_resource_config_file": "config/resourceconfig.json",
}


@pytest.mark.parametrize(("attr", "relative"), sorted(_LAYOUT.items()))
def test_opt_ml_layout(attr: str, relative: str) -> None:
    assert getattr(OptMl(), attr) == PurePosixPath("/opt/ml") / relative
    assert getattr(OptMl.at("/tmp/job/root"), attr) == PurePosixPath("/tmp/job/root") / relative


def test_opt_ml_defaults_and_channels() -> None:
    assert DEFAULT_ROOT == "/opt/ml"
    assert OptMl().root == PurePosixPath("/opt/ml")
    assert OptMl.at(Path("/srv/x")).channel_dir("train") == PurePosixPath(
        "/srv/x/input/data/train")
    assert OptMl.at("/a") == OptMl.at(Path("/a"))


@pytest.mark.parametrize(
    ("container_path", "expected"),
    [
        ("/opt/ml", "/root"),
        ("/opt/ml/processing/input/data", "/root/processing/input/data"),
        ("/opt/ml/processing/output/", "/root/processing/output"),
    ],
)
def test_opt_ml_rebase(container_path: str, expected: str) -> None:
    assert OptMl.at("/root").rebase(container_path) == PurePosixPath(expected)


@pytest.mark.parametrize(
    "outside",
    ["/opt/mlx/a", "/opt", "/etc/passwd", "processing/input", "/opt/ml/processing/../../etc",
     "/opt/ml/.."],
)
def test_opt_ml_rebase_refuses_paths_outside(outside: str) -> None:
    with pytest.raises(ValueError):
        OptMl.at("/root").rebase(outside)


# -- environment encoding ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        # sagemaker-training-toolkit test_mapping.py examples.
        (True, "true"),
        (False, "false"),
        (["1", ["2", "3", [["6"]]]], '["1",["2","3",[["6"]]]]'),
        ({"a": [1, 3, 4]}, '{"a":[1,3,4]}'),
        (2, "2"),
        (4.0, "4.0"),
        ("plain string", "plain string"),
        (b"caf\xe9", "café"),
        (None, ""),
        ({"b": 1, "a": 2}, '{"a":2,"b":1}'),
        ({"k": "é"}, '{"k":"\\u00e9"}'),
    ],
    ids=repr,
)
def test_encode_env_value_like_aws(value: Any, encoded: str) -> None:
    assert encode_env_value(value) == encoded


def test_env_key_keeps_hyphens() -> None:
    assert env_key("SM_HP_", "learning-rate") == "SM_HP_LEARNING-RATE"
    assert env_key("SM_CHANNEL_", "train") == "SM_CHANNEL_TRAIN"
