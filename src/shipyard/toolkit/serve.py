"""``serve``: the inference entry point SageMaker runs (``docker run IMAGE serve``).

Rules implemented (AWS "Use Your Own Inference Code with Hosting Services", reference 4.1-4.6):
an HTTP server on ``SAGEMAKER_BIND_TO_PORT`` (8080) answering ``GET /ping``,
``POST /invocations`` and ``GET /execution-parameters``, running the user's ``inference.py``
from ``/opt/ml/model/code`` with AWS's handler pattern; SIGTERM drains and exits 0.

Works as ``serve`` on PATH, as ``ENTRYPOINT ["serve"]`` (argv ``serve serve``) and as
``python -m shipyard.toolkit.serve``. Settings: :mod:`shipyard.toolkit.serving.settings`.
Exit status: 0 after SIGTERM, 1 when it cannot start (bad setting, pip failure, port in use).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from shipyard.errors import ShipyardError

logger = logging.getLogger("shipyard.toolkit.serve")


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s shipyard-serve[%(process)d] %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> None:
    """Run the model server until SIGTERM; exits the process with its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:  # ENTRYPOINT ["serve"] plus SageMaker's `serve` argument
        args = args[1:]
    if args:
        sys.stderr.write(f"serve takes no arguments (got {' '.join(args)}); configure it with "
                         "SAGEMAKER_* environment variables\n")
        sys.exit(2)
    _configure_logging()
    from shipyard.toolkit.serving.settings import ServeSettings
    from shipyard.toolkit.serving.workers import Supervisor, bind, prepare_code

    try:
        settings = ServeSettings.from_environ(os.environ)
        prepare_code(settings)
        sock = bind(settings)
    except (ShipyardError, OSError) as exc:
        logger.error("cannot start: %s", exc)
        sys.exit(1)
    sys.exit(Supervisor(settings).run(sock))


if __name__ == "__main__":
    main()
