"""Running the real `shipyard` CLI in a subprocess, as a user at a terminal does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys


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
