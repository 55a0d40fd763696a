"""``shipyard-entry``: the exec-form ENTRYPOINT of images made by ``shipyard build``.

SageMaker starts a training container as ``docker run IMAGE train`` and a serving container as
``docker run IMAGE serve`` (the argument replaces CMD). One image does both, so the entry point
picks the toolkit's ``train`` or ``serve`` from its first argument and runs it *in this
process*: PID 1 stays the toolkit, which handles SIGTERM (forwarding it to the training script,
or draining the model server). Any other command is ``exec``'d as given (``docker run IMAGE
python -c ...``, processing jobs' ``ContainerArguments``), again without a shell in between.

Both entry points read ``SAGEMAKER_PROGRAM``, so the image cannot fix one value for both. The
image sets ``SAGEMAKER_PROGRAM`` to its training script (so a bare ``train`` works, as AWS
documents) and records its inference module in ``SHIPYARD_SERVE_PROGRAM``; for ``serve`` the
image's training value is swapped for the inference module. A value the job or model sets
(``Environment``) is never touched. Standard library only: it starts in every container.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence

__all__ = [
    "CODE_DIR_ENV",
    "SERVE_PROGRAM_ENV",
    "TRAIN_PROGRAM_ENV",
    "main",
    "serve_environment",
    "train_environment",
]

TRAIN_PROGRAM_ENV = "SHIPYARD_TRAIN_PROGRAM"
SERVE_PROGRAM_ENV = "SHIPYARD_SERVE_PROGRAM"
CODE_DIR_ENV = "SHIPYARD_CODE_DIR"
_PROGRAM = "SAGEMAKER_PROGRAM"
_SUBMIT_DIRECTORY = "SAGEMAKER_SUBMIT_DIRECTORY"
_REQUIRE_GPU = "SHIPYARD_REQUIRE_GPU"
_USAGE = "usage: shipyard-entry train | serve | COMMAND [ARG...]"


def train_environment(environ: MutableMapping[str, str]) -> None:
    """Point ``SAGEMAKER_PROGRAM`` at the image's training script unless the job set one."""
    program = environ.get(TRAIN_PROGRAM_ENV, "")
    if program and not environ.get(_PROGRAM):
        environ[_PROGRAM] = program


def serve_environment(environ: MutableMapping[str, str]) -> None:
    """Point ``serve`` at the image's inference module (or at ``/opt/ml/model/code``).

    ``SAGEMAKER_PROGRAM`` still holding the image's training script means nobody chose an
    inference module: use the image's, or the toolkit's default (``inference.py``). An image
    without one keeps no ``SAGEMAKER_SUBMIT_DIRECTORY`` of its own, so ``serve`` looks in the
    model's ``code/`` folder, where SageMaker's SDK packs inference code.
    """
    serve_program = environ.get(SERVE_PROGRAM_ENV, "")
    current = environ.get(_PROGRAM, "")
    if not current or current == environ.get(TRAIN_PROGRAM_ENV):
        if serve_program:
            environ[_PROGRAM] = serve_program
        else:
            environ.pop(_PROGRAM, None)
    if not serve_program and environ.get(_SUBMIT_DIRECTORY) == environ.get(CODE_DIR_ENV):
        environ.pop(_SUBMIT_DIRECTORY, None)


def _gpu_refusal(mode: str) -> int | None:
    """Exit status when this is a GPU image, a GPU is required and none can be used."""
    if os.environ.get(_REQUIRE_GPU, "").strip().lower() not in {"1", "true", "yes"}:
        return None
    from shipyard.build.gpu import gpu_problem

    problem = gpu_problem(os.environ)
    if problem is None:
        return None
    sys.stderr.write(f"shipyard-entry: {problem}\n")
    if mode == "train":
        # The failure file is what becomes FailureReason (first 1,024 characters).
        from pathlib import Path

        from shipyard.contract.paths import DEFAULT_ROOT, OptMl
        from shipyard.toolkit.failure import write_failure

        layout = OptMl.at(os.environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_ROOT)
        write_failure(Path(layout.failure_file), f"GpuUnavailable: {problem}\n")
    return 1


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write(_USAGE + "\n")
        sys.exit(2)
    mode, rest = args[0], args[1:]
    if mode == "train":
        refused = _gpu_refusal(mode)
        if refused is not None:
            sys.exit(refused)
        train_environment(os.environ)
        from shipyard.toolkit.train import main as train_main

        train_main(rest)
    elif mode == "serve":
        refused = _gpu_refusal(mode)
        if refused is not None:
            sys.exit(refused)
        serve_environment(os.environ)
        from shipyard.toolkit.serve import main as serve_main

        serve_main(rest)
    else:
        try:
            os.execvp(mode, args)
        except OSError as exc:
            sys.stderr.write(f"shipyard-entry: cannot run {mode}: {exc.strerror}\n")
            sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)


if __name__ == "__main__":
    main()
