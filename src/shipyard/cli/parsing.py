"""Parsing ``KEY=VALUE`` style options into SageMaker request fields."""

from __future__ import annotations

import datetime as dt
import re
import shlex
from pathlib import Path

from shipyard.cli.errors import CliError, ExitCode


def pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{what} must be KEY=VALUE, got {item!r}", ExitCode.USAGE)
        out[key] = value
    return out


def default_job_name(image: str) -> str:
    """``<image base name>-YYYY-MM-DD-HH-MM-SS-mmm``, as the SageMaker SDK names jobs."""
    base = image.rstrip("/").split("/")[-1].split(":")[0].split("@")[0]
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-")[:32] or "job"
    now = dt.datetime.now()
    return f"{base}-{now:%Y-%m-%d-%H-%M-%S}-{now.microsecond // 1000:03d}"


def split_command(value: str | None) -> list[str] | None:
    return shlex.split(value) if value else None


def to_uri(value: str) -> str:
    """Local paths become absolute file:// URIs, so the job does not depend on our cwd."""
    if "://" in value:
        return value
    return Path(value).expanduser().absolute().as_uri()
