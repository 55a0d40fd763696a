"""``train``: the training entry point SageMaker runs in the container (``docker run IMAGE train``).

Rules implemented (AWS "How Amazon SageMaker Runs Your Training Image";
sagemaker-training-toolkit ``cli/train.py`` and ``trainer.train``):
1. read the config files under the root (``/opt/ml``, or ``SAGEMAKER_BASE_DIR``);
2. find, fetch and install the user's entry point;
3. run it as a child with the ``SM_*`` variables, cwd = the code dir, ``PYTHONPATH`` with the
   code dir first, forwarding SIGTERM/SIGINT to its process group;
4. exit 0 -> empty ``output/success``; otherwise write ``output/failure`` (unless the user did)
   and exit with the child's status. Problems found by the toolkit itself (no entry point,
   pip failure, unsafe archive, malformed JSON) are written the same way with exit status 1.

Works as ``train`` on PATH, as ``ENTRYPOINT ["train"]`` (argv ``train train``), and as
``python -m shipyard.toolkit.train``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from shipyard.contract import env as names
from shipyard.contract.paths import DEFAULT_ROOT, OptMl
from shipyard.errors import ShipyardError
from shipyard.toolkit.entry_point import (
    build_command,
    entry_point_type,
    install,
    prepare_code_dir,
    resolve_program,
)
from shipyard.toolkit.environment import (
    TrainingEnvironment,
    build_environment,
    detect_hardware,
    read_training_config,
    submit_source,
)
from shipyard.toolkit.failure import (
    describe_toolkit_error,
    describe_user_failure,
    write_failure,
    write_success,
)
from shipyard.toolkit.hyperparameters import bool_flag_style
from shipyard.toolkit.process import run_child

logger = logging.getLogger("shipyard.toolkit")

TOOLKIT_ERROR_EXIT = 1


def _ensure_dirs(layout: OptMl) -> None:
    # AWS expects these to exist; a read-only mount must not stop the job (the script may
    # not write there at all), so failures are only logged.
    for folder in (layout.model_dir, layout.output_data_dir):
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.warning("cannot create %s: %s", folder, exc)


def child_environment(
    environ: Mapping[str, str], training: TrainingEnvironment, code_dir: Path
) -> dict[str, str]:
    """The user process's env: ours, plus what ``trainer``/``write_env_vars`` set.

    ``SAGEMAKER_JOB_NAME`` (hp ``sagemaker_job_name``), ``CURRENT_HOST``, ``SAGEMAKER_REGION``,
    every ``SM_*``, ``PYTHONPATH`` = code dir + ``sys.path``, and ``PYTHONUNBUFFERED=1`` so
    prints reach ``docker logs`` at once.
    """
    env = dict(environ)
    toolkit = training.toolkit_parameters
    env[names.SAGEMAKER_JOB_NAME] = str(toolkit.get(names.HP_JOB_NAME) or "")
    env[names.CURRENT_HOST] = training.current_host
    region = (
        toolkit.get(names.HP_REGION)
        or environ.get(names.SAGEMAKER_REGION)
        or environ.get("AWS_REGION")
        or environ.get("AWS_DEFAULT_REGION")
        or ""
    )
    env[names.SAGEMAKER_REGION] = str(region)
    env.update(training.to_env_vars())
    path: list[str] = []
    for entry in [str(code_dir), *sys.path]:
        if entry and entry not in path:
            path.append(entry)
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _report(layout: OptMl, text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()
    if not write_failure(Path(layout.failure_file), text):
        logger.info("%s already exists or cannot be written: left as it is", layout.failure_file)


def run(layout: OptMl, environ: Mapping[str, str]) -> int:
    """Run one training job under ``layout``; returns the exit status for the container."""
    try:
        _ensure_dirs(layout)
        config = read_training_config(layout)
        instance_type = str(config.resource_config.get("current_instance_type", "local"))
        training = build_environment(layout, config, environ, detect_hardware(instance_type))
        style = bool_flag_style(environ, training.additional_framework_parameters)
        training = dataclasses.replace(training, bool_style=style)
        if isinstance(training.log_level, int):
            logger.setLevel(training.log_level)
        program = resolve_program(environ, training.toolkit_parameters)
        source = submit_source(training.toolkit_parameters, environ)
        code_dir = prepare_code_dir(layout, source, environ)
        kind = entry_point_type(code_dir, program)
        install(kind, code_dir, program, environ)
        command = build_command(kind, program, training.to_cmd_args(), code_dir)
        env = child_environment(environ, training, code_dir)
    except ShipyardError as exc:
        _report(layout, describe_toolkit_error(exc))
        return TOOLKIT_ERROR_EXIT
    except Exception as exc:
        _report(layout, f"InternalError: {exc}\n{traceback.format_exc()}")
        return TOOLKIT_ERROR_EXIT

    logger.info("invoking user script: %s (cwd %s)", shlex.join(command), code_dir)
    logger.debug("training env: %s", env.get("SM_TRAINING_ENV"))
    sys.stderr.flush()
    try:
        result = run_child(command, cwd=code_dir, env=env)
    except ShipyardError as exc:
        _report(layout, describe_toolkit_error(exc))
        return TOOLKIT_ERROR_EXIT
    if result.returncode == 0:
        write_success(Path(layout.success_file))
        logger.info("training finished: exit code 0")
        return 0
    _report(layout, describe_user_failure(result.returncode, command, result.stderr_tail))
    return result.returncode


def _configure_logging() -> None:
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s shipyard-train %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``train``; ignores a leading ``train`` (``ENTRYPOINT ["train"]`` + CMD)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "train":
        args = args[1:]
    _configure_logging()
    if args:
        logger.info("ignoring arguments %s: training is configured by /opt/ml files", args)
    root = os.environ.get(names.BASE_DIR) or DEFAULT_ROOT
    sys.exit(run(OptMl.at(root), os.environ))


if __name__ == "__main__":
    main()
