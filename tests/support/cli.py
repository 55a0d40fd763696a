"""Running the real `shipyard` CLI as a user does: in-process with ``CliRunner`` or in a
subprocess at a terminal, with settings passed as ``SHIPYARD_*`` variables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from shipyard.cli import cli
from tests.support.images import SESSION_SCOPE


def shipyard_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """Settings for a CLI or server on ``data_dir``: containers on the engine in this test
    session's scope, the API on a free port, no S3 store of its own (``embedded_s3="true"``
    asks for one, on a free port); ``settings`` add more by name
    (``stop_grace_seconds="5"`` is ``SHIPYARD_STOP_GRACE_SECONDS=5``)."""
    return {"SHIPYARD_DATA_DIR": str(data_dir), "SHIPYARD_RUNTIME": "docker",
            "SHIPYARD_SCOPE": SESSION_SCOPE, "SHIPYARD_API_PORT": "0",
            "SHIPYARD_EMBEDDED_S3": "false", "SHIPYARD_S3_PORT": "0",
            **{f"SHIPYARD_{name.upper()}": value for name, value in settings.items()}}


def run(args: list[str], env: dict[str, str], stdin: bytes | None = None) -> Result:
    """``shipyard ARGS`` through ``CliRunner`` with exactly ``env`` as its environment."""
    return CliRunner().invoke(cli, args, env=env, input=stdin, catch_exceptions=False)


def interrupt(args: list[str], env: dict[str, str], once: str) -> tuple[int, str]:
    """Run ``shipyard ARGS``, press Ctrl-C (SIGINT) once a line containing ``once`` is
    printed; returns the exit status and what it printed after that."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipyard.cli", *args], env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if once in line:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        return proc.wait(timeout=30), rest
    finally:
        proc.kill()
        proc.wait()
