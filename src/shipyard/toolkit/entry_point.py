"""The user's entry point: where the code comes from, what kind it is, how it is installed and run.

Rules implemented (sagemaker-training-toolkit ``entry_point``, ``_entry_point_type``,
``files.download_and_extract``, ``modules``, ``process.ProcessRunner._create_command``):
- the program is env ``SAGEMAKER_PROGRAM``, else hyperparameter ``sagemaker_program``;
- the code comes from hyperparameter ``sagemaker_submit_directory`` (``s3://`` tarball, local
  tarball or local folder), else env ``SAGEMAKER_SUBMIT_DIRECTORY``, else ``/opt/ml/code``;
  a tarball is extracted into ``/opt/ml/code`` unless that folder already holds files (AWS
  skips then, so code baked into the image wins); members escaping the folder are refused
  (AWS extracts with no filtering);
- type: ``*.sh`` -> command; ``setup.py`` in the code dir -> Python package; ``*.py`` ->
  Python program; anything else -> command (made executable);
- install: package -> ``pip install . [-r requirements.txt]``; program with requirements.txt
  -> ``pip install -r requirements.txt``; commands install nothing;
- run: program ``python train.py ARGS``; package ``python -m train ARGS``; command
  ``/bin/sh -c "./train.sh ARGS"`` (so a script without a shebang still runs).
"""

from __future__ import annotations

import enum
import logging
import os
import shlex
import shutil
import stat
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shipyard.contract import env as names
from shipyard.contract.archives import safe_extract
from shipyard.contract.paths import OptMl
from shipyard.errors import DataSourceError, EntryPointError, InstallError, ToolkitError
from shipyard.toolkit.failure import describe_exit
from shipyard.toolkit.process import run_child

logger = logging.getLogger("shipyard.toolkit")

REQUIREMENTS_FILE = "requirements.txt"


class EntryPointType(enum.Enum):
    PYTHON_PROGRAM = "python_program"
    PYTHON_PACKAGE = "python_package"
    COMMAND = "command"


def resolve_program(environ: Mapping[str, str], toolkit_hps: Mapping[str, Any]) -> str:
    """The entry point name; ``EntryPointError`` when none is configured."""
    program = environ.get(names.SAGEMAKER_PROGRAM) or toolkit_hps.get(names.HP_PROGRAM)
    if not program:
        raise EntryPointError(
            "no entry point: set the SAGEMAKER_PROGRAM environment variable (e.g. in the "
            "Dockerfile: ENV SAGEMAKER_PROGRAM train.py) or the sagemaker_program hyperparameter"
        )
    return str(program)


def entry_point_type(code_dir: Path, program: str) -> EntryPointType:
    """``_entry_point_type.get``: .sh, then setup.py, then .py, else a command."""
    if program.endswith(".sh"):
        return EntryPointType.COMMAND
    if (code_dir / "setup.py").exists():
        return EntryPointType.PYTHON_PACKAGE
    if program.endswith(".py"):
        return EntryPointType.PYTHON_PROGRAM
    return EntryPointType.COMMAND


def _has_files(folder: Path) -> bool:
    try:
        return any(folder.iterdir())
    except OSError:
        return False


def _download_s3(uri: str, dest: Path, environ: Mapping[str, str]) -> None:
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as exc:
        raise ToolkitError(
            f"the submit directory {uri} is on S3, which needs boto3 in the image "
            "(pip install boto3), or bake the code into /opt/ml/code instead"
        ) from exc
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise DataSourceError(f"{uri} is not an s3://bucket/key URI")
    region = (
        environ.get(names.SAGEMAKER_REGION)
        or environ.get("AWS_REGION")
        or environ.get("AWS_DEFAULT_REGION")
    )
    try:
        session = boto3.session.Session(
            aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY"),
            aws_session_token=environ.get("AWS_SESSION_TOKEN"),
            region_name=region or "us-east-1",
        )
        client = session.client("s3", endpoint_url=environ.get(names.S3_ENDPOINT_URL) or None)
        client.download_file(bucket, key, str(dest))
    except (BotoCoreError, ClientError) as exc:
        raise DataSourceError(f"cannot download the submit directory {uri}: {exc}") from exc


def _unpack(archive: Path, code_dir: Path, label: str) -> None:
    if tarfile.is_tarfile(archive):
        safe_extract(archive, code_dir)
    else:
        # files.download_and_extract copies a plain file as is.
        code_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(archive, code_dir / Path(label).name)


def prepare_code_dir(layout: OptMl, source: str | None, environ: Mapping[str, str]) -> Path:
    """Make the user's code available and return the folder to run it in."""
    code_dir = Path(layout.code_dir)
    if source is None:
        return code_dir
    source = source.removeprefix("file://")
    if not source.startswith("s3://"):
        local = Path(source)
        if local.is_dir():
            return local  # used in place: nothing to copy
        if not local.is_file():
            raise DataSourceError(f"the submit directory {source} does not exist")
    if _has_files(code_dir):
        logger.info("%s already holds files: not unpacking %s over them", code_dir, source)
        return code_dir
    try:
        if source.startswith("s3://"):
            with tempfile.TemporaryDirectory(prefix="shipyard-code-") as tmp:
                archive = Path(tmp) / "sourcedir.tar.gz"
                _download_s3(source, archive, environ)
                _unpack(archive, code_dir, source)
        else:
            _unpack(Path(source), code_dir, source)
    except OSError as exc:
        raise DataSourceError(f"cannot unpack the submit directory {source}: {exc}") from exc
    logger.info("unpacked %s into %s", source, code_dir)
    return code_dir


def _pip_env(environ: Mapping[str, str]) -> dict[str, str]:
    env = dict(environ)
    # Debian/Ubuntu system Pythons refuse pip installs (PEP 668) unless told; inside a
    # training container installing into the system interpreter is the point.
    env.setdefault("PIP_BREAK_SYSTEM_PACKAGES", "1")
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def install_command(
    kind: EntryPointType, code_dir: Path, python: str = sys.executable
) -> list[str] | None:
    """The pip command for this entry point, or None when nothing is installed."""
    has_requirements = (code_dir / REQUIREMENTS_FILE).is_file()
    if kind is EntryPointType.PYTHON_PACKAGE:
        cmd = [python, "-m", "pip", "install", "."]
        return cmd + (["-r", REQUIREMENTS_FILE] if has_requirements else [])
    if kind is EntryPointType.PYTHON_PROGRAM and has_requirements:
        return [python, "-m", "pip", "install", "-r", REQUIREMENTS_FILE]
    return None


def install(
    kind: EntryPointType,
    code_dir: Path,
    program: str,
    environ: Mapping[str, str],
    python: str = sys.executable,
) -> None:
    """Install dependencies (``InstallError`` with pip's stderr) or make a command executable."""
    if kind is EntryPointType.COMMAND:
        _make_executable(code_dir / program)
        return
    command = install_command(kind, code_dir, python)
    if command is None:
        return
    logger.info("installing dependencies: %s", shlex.join(command))
    result = run_child(command, cwd=code_dir, env=_pip_env(environ))
    if result.returncode != 0:
        headline = "pip " + shlex.join(command[3:])  # command is [python, -m, pip, ...]
        raise InstallError(describe_exit(headline, result.returncode, command, result.stderr_tail))


def _make_executable(path: Path) -> None:
    if not path.is_file():
        raise EntryPointError(f"entry point {path.name} not found in {path.parent}")
    mode = path.stat().st_mode
    wanted = mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    if mode != wanted:
        try:
            path.chmod(wanted)
        except OSError as exc:  # read-only code mount
            if not os.access(path, os.X_OK):
                raise EntryPointError(f"entry point {path} is not executable: {exc}") from exc


def build_command(
    kind: EntryPointType,
    program: str,
    args: Sequence[str],
    code_dir: Path,
    python: str = sys.executable,
) -> list[str]:
    """The user's command line (``ProcessRunner._create_command``)."""
    if kind is EntryPointType.PYTHON_PACKAGE:
        module = program.removesuffix(".py")
        return [python, "-m", module, *args]
    if not (code_dir / program).is_file():
        raise EntryPointError(f"entry point {program} not found in {code_dir}")
    if kind is EntryPointType.PYTHON_PROGRAM:
        return [python, program, *args]
    return ["/bin/sh", "-c", " ".join([f"./{program}", *(shlex.quote(a) for a in args)])]
