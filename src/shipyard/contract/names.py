"""SageMaker's resource-name rules, with AWS's exact error text."""

from __future__ import annotations

import re

from shipyard.errors import ValidationError

#: TrainingJobName, ProcessingJobName, EndpointName... (1-63 chars, hyphens only between).
JOB_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
JOB_NAME_MAX = 63
CHANNEL_NAME_PATTERN = r"[A-Za-z0-9\.\-_]+"
ENV_KEY_PATTERN = r"[a-zA-Z_][a-zA-Z0-9_]*"

_JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
_CHANNEL = re.compile(r"[A-Za-z0-9.\-_]{1,64}")
_ENV_KEY = re.compile(ENV_KEY_PATTERN)


def constraint_error(value: object, member: str, constraint: str) -> ValidationError:
    """AWS's wording: ``1 validation error detected: Value 'x' at 'member' failed to ...``."""
    return constraint_errors(value, member, [constraint])


def constraint_errors(value: object, member: str, constraints: list[str]) -> ValidationError:
    """Several broken constraints of one value, joined with ``; `` as AWS reports them."""
    count = len(constraints)
    return ValidationError(
        f"{count} validation error{'' if count == 1 else 's'} detected: "
        + "; ".join(
            f"Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
            for constraint in constraints
        )
    )


def check_job_name(name: str, member: str = "trainingJobName") -> str:
    """1-63 characters (length checked apart: the pattern lets any run of hyphens through)."""
    pattern = f"Member must satisfy regular expression pattern: {JOB_NAME_PATTERN}"
    if not isinstance(name, str):
        raise constraint_error(name, member, pattern)
    broken = []
    if len(name) < 1:
        broken.append("Member must have length greater than or equal to 1")
    if len(name) > JOB_NAME_MAX:
        broken.append(f"Member must have length less than or equal to {JOB_NAME_MAX}")
    if not _JOB_NAME.fullmatch(name):
        broken.append(pattern)
    if broken:
        raise constraint_errors(name, member, broken)
    return name


def check_channel_name(name: str, member: str = "inputDataConfig.member.channelName") -> str:
    if not isinstance(name, str) or not _CHANNEL.fullmatch(name):
        raise constraint_error(
            name, member, f"Member must satisfy regular expression pattern: {CHANNEL_NAME_PATTERN}"
        )
    return name


def check_env_value(key: str, value: str) -> str:
    """A value a process environment can hold: C strings end at NUL, so an engine refuses
    it at start (exit code 128) long after the request was accepted."""
    if "\x00" in value:
        raise ValidationError(f"Environment value of {key} contains a NUL character, which no "
                              "process environment can hold")
    return value


def check_env_key(key: str, member: str = "environment") -> str:
    if not isinstance(key, str) or len(key) > 512 or not _ENV_KEY.fullmatch(key):
        raise constraint_error(
            key, member, f"Map keys must satisfy constraint: [Member must satisfy regular "
            f"expression pattern: {ENV_KEY_PATTERN}]"
        )
    return key
