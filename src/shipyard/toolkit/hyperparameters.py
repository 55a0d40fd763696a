"""Hyperparameters: decoding, the reserved ``sagemaker_*`` split, and command-line arguments.

Rules implemented (sagemaker-training-toolkit ``environment.read_hyperparameters``,
``mapping.split_by_criteria``, ``mapping.to_cmd_args``, ``params.SAGEMAKER_HYPERPARAMETERS``):

- hyperparameters.json maps names to strings; each value is ``json.loads``-ed and kept as the
  raw value when that fails (``"32"`` -> 32, ``"true"`` -> True, ``"True"`` -> ``"True"``,
  ``"\\"adam\\""`` -> ``"adam"``, ``"adam"`` -> ``"adam"``).
- Every key starting with ``sagemaker_`` is reserved, as are ``_tuning_objective_metric`` and
  ``default_user_module_name``. The toolkit consumes a few; the other ``sagemaker_*`` keys are
  ``additional_framework_parameters`` (``SM_FRAMEWORK_PARAMS``); the rest are the user's.
- Command-line arguments: keys sorted, ``--key`` (``-k`` for a one-letter key), then the value:
  a dict as ``k=v,k2=v2`` (sorted), a string as is, None as ``""``, anything else ``str()``
  (Python spelling: ``True``, ``[1, 2]``).

Shipyard extension: the ``store_true`` boolean style (``SHIPYARD_BOOL_FLAGS=store_true`` or the
hyperparameter ``sagemaker_bool_flags``) renders a true boolean as a bare ``--flag`` and leaves a
false one out, so argparse ``action="store_true"`` flags work (sagemaker-python-sdk #4247).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shipyard.contract.env import RESERVED_HP_KEYS, RESERVED_HP_PREFIX, TOOLKIT_CONSUMED_HPS
from shipyard.errors import ValidationError

#: Env var choosing how boolean hyperparameters become arguments (Shipyard extension).
BOOL_FLAGS_ENV = "SHIPYARD_BOOL_FLAGS"
#: The same switch as a hyperparameter; it starts with ``sagemaker_`` so it never reaches argv.
BOOL_FLAGS_HP = "sagemaker_bool_flags"
#: AWS's behaviour: ``--flag True`` / ``--flag False``.
BOOL_STYLE_VALUE = "value"
#: ``--flag`` when true, nothing when false.
BOOL_STYLE_STORE_TRUE = "store_true"
BOOL_STYLES = (BOOL_STYLE_VALUE, BOOL_STYLE_STORE_TRUE)


def decode_value(raw: Any) -> Any:
    """One hyperparameter value as AWS decodes it: JSON when it parses, else unchanged."""
    try:
        return json.loads(raw)
    except (ValueError, TypeError):
        return raw


def decode_hyperparameters(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Decode every value of hyperparameters.json (see :func:`decode_value`)."""
    return {str(key): decode_value(value) for key, value in raw.items()}


def is_reserved(key: str) -> bool:
    """True for the names SageMaker keeps away from the user's arguments."""
    return key.startswith(RESERVED_HP_PREFIX) or key in RESERVED_HP_KEYS


@dataclass(frozen=True)
class HyperparameterSplit:
    """Decoded hyperparameters in AWS's three groups."""

    user: dict[str, Any] = field(default_factory=dict)
    """What the script sees: ``SM_HPS``, ``SM_HP_*`` and the command-line arguments."""
    framework: dict[str, Any] = field(default_factory=dict)
    """Other ``sagemaker_*`` keys: ``additional_framework_parameters``."""
    toolkit: dict[str, Any] = field(default_factory=dict)
    """The ones the toolkit itself consumes (program, submit directory, region, ...)."""


def split_hyperparameters(decoded: Mapping[str, Any]) -> HyperparameterSplit:
    """Split decoded hyperparameters like ``mapping.split_by_criteria`` + ``Environment``."""
    user: dict[str, Any] = {}
    framework: dict[str, Any] = {}
    toolkit: dict[str, Any] = {}
    for key, value in decoded.items():
        if key in TOOLKIT_CONSUMED_HPS or key in RESERVED_HP_KEYS:
            toolkit[key] = value
        elif key.startswith(RESERVED_HP_PREFIX):
            framework[key] = value
        else:
            user[key] = value
    return HyperparameterSplit(user=user, framework=framework, toolkit=toolkit)


def bool_flag_style(environ: Mapping[str, str], framework: Mapping[str, Any]) -> str:
    """The boolean style: ``SHIPYARD_BOOL_FLAGS`` env first, then ``sagemaker_bool_flags``.

    Raises ``ValidationError`` for an unknown style, so a typo fails the job loudly instead of
    silently passing ``--flag True`` to a ``store_true`` parser.
    """
    raw = environ.get(BOOL_FLAGS_ENV)
    source = BOOL_FLAGS_ENV
    if raw is None or raw == "":
        value = framework.get(BOOL_FLAGS_HP)
        if value is None:
            return BOOL_STYLE_VALUE
        raw, source = str(value), f"hyperparameter {BOOL_FLAGS_HP}"
    style = raw.strip().lower()
    if style not in BOOL_STYLES:
        raise ValidationError(
            f"{source}={raw!r} is not a boolean flag style; use one of {', '.join(BOOL_STYLES)}"
        )
    return style


def _as_text(value: Any) -> str:
    # mapping._decode: None -> "", bytes -> latin-1, everything else str().
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin1")
    return str(value)


def _arg_name(key: str) -> str:
    name = _as_text(key)
    if not name:
        return ""
    return f"--{name}" if len(name) > 1 else f"-{name}"


def _arg_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return _as_text(value)


def _as_bool(value: Any) -> bool | None:
    # In store_true mode the generic Estimator's str(True) == "True" counts as a boolean too.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def to_cmd_args(
    hyperparameters: Mapping[str, Any], bool_style: str = BOOL_STYLE_VALUE
) -> list[str]:
    """``mapping.to_cmd_args``: ``{"epochs": 2, "lr": 0.1}`` -> ``--epochs 2 --lr 0.1``."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        value = hyperparameters[key]
        if bool_style == BOOL_STYLE_STORE_TRUE:
            flag = _as_bool(value)
            if flag is not None:
                if flag:
                    args.append(_arg_name(key))
                continue
        args.extend((_arg_name(key), _arg_value(value)))
    return args
