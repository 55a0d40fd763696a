"""Hyperparameter decoding, the reserved split and CLI args, with AWS's own examples."""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.errors import ValidationError
from shipyard.toolkit.hyperparameters import (
    BOOL_STYLE_STORE_TRUE,
    BOOL_STYLE_VALUE,
    bool_flag_style,
    decode_hyperparameters,
    decode_value,
    split_hyperparameters,
    to_cmd_args,
)


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("32", 32),
        ("0.001", 0.001),
        ("1e-3", 0.001),
        ("true", True),
        ("True", "True"),
        ("null", None),
        ('"adam"', "adam"),
        ("[1,2]", [1, 2]),
        ("adam", "adam"),
        ('{"a": 1}', {"a": 1}),
        (7, 7),  # not a string: json.loads raises TypeError, value kept
    ],
    ids=lambda v: repr(v),
)
def test_decode_value_follows_aws(raw: Any, decoded: Any) -> None:
    assert decode_value(raw) == decoded
    assert type(decode_value(raw)) is type(decoded)


def test_sdk_payload_split() -> None:
    raw = {
        "epochs": "2",
        "batch-size": "32",
        "learning-rate": "0.001",
        "model_dir": '"s3://bucket/model"',
        "sagemaker_program": '"train-cnn.py"',
        "sagemaker_submit_directory": '"s3://bucket/source/sourcedir.tar.gz"',
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"job-1"',
        "sagemaker_region": '"eu-north-1"',
        "sagemaker_mpi_enabled": "true",
        "_tuning_objective_metric": "loss",
    }
    split = split_hyperparameters(decode_hyperparameters(raw))
    assert split.user == {
        "epochs": 2,
        "batch-size": 32,
        "learning-rate": 0.001,
        "model_dir": "s3://bucket/model",
    }
    assert split.framework == {"sagemaker_mpi_enabled": True}
    assert split.toolkit["sagemaker_program"] == "train-cnn.py"
    assert split.toolkit["sagemaker_container_log_level"] == 20
    assert "_tuning_objective_metric" in split.toolkit


@pytest.mark.parametrize(
    ("hps", "args"),
    [
        ({"truthy": True, "falsy": False}, ["--falsy", "False", "--truthy", "True"]),
        ({"nested": ["1", ["2", "3", [["6"]]]]}, ["--nested", "['1', ['2', '3', [['6']]]]"]),
        (
            {"map": {"a": [1, 3, 4]}, "channel_dirs": {"train": "foo", "eval": "bar"}},
            ["--channel_dirs", "eval=bar,train=foo", "--map", "a=[1, 3, 4]"],
        ),
        ({"float": 4.0, "x": 1, "none": None}, ["--float", "4.0", "--none", "", "-x", "1"]),
        (
            {"batch-size": 32, "learning_rate": 0.1},
            ["--batch-size", "32", "--learning_rate", "0.1"],
        ),
    ],
    ids=["bools", "nested", "maps", "floats-short-none", "hyphen-underscore"],
)
def test_to_cmd_args_matches_aws_examples(hps: dict[str, Any], args: list[str]) -> None:
    assert to_cmd_args(hps) == args


def test_store_true_style_renders_bare_flags() -> None:
    hps = {"verbose": True, "dry-run": False, "legacy": "True", "off": "false", "epochs": 3}
    assert to_cmd_args(hps, BOOL_STYLE_STORE_TRUE) == ["--epochs", "3", "--legacy", "--verbose"]


def test_bool_style_env_beats_hyperparameter() -> None:
    assert bool_flag_style({}, {}) == BOOL_STYLE_VALUE
    assert bool_flag_style({}, {"sagemaker_bool_flags": "store_true"}) == BOOL_STYLE_STORE_TRUE
    env = {"SHIPYARD_BOOL_FLAGS": "value"}
    assert bool_flag_style(env, {"sagemaker_bool_flags": "store_true"}) == BOOL_STYLE_VALUE
    assert bool_flag_style({"SHIPYARD_BOOL_FLAGS": "Store_True"}, {}) == BOOL_STYLE_STORE_TRUE


def test_unknown_bool_style_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="store_ture"):
        bool_flag_style({"SHIPYARD_BOOL_FLAGS": "store_ture"}, {})
