"""A Shipyard server as a user runs it: ``shipyard server`` in a process of its own, with its
embedded S3 store, and the environment ``shipyard server status`` prints for it."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.cli import shipyard_env

__all__ = ["UserServer", "status_env", "user_server"]

#: Starting the server and its store (SeaweedFS: 2-5 s, more on a loaded machine).
START_TIMEOUT = 90.0


@dataclass
class UserServer:
    data_dir: Path
    proc: subprocess.Popen[bytes]
    #: Exactly what ``eval "$(shipyard server status)"`` sets.
    env: dict[str, str]
    log: Path


def status_env(settings_env: dict[str, str]) -> dict[str, str] | None:
    """The variables ``shipyard server status`` prints (parsed as the shell would), or None
    while no server answers."""
    done = subprocess.run([sys.executable, "-m", "shipyard.cli", "server", "status"],
                          env=settings_env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return None
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        words = shlex.split(line)
        assert words[0] == "export" and len(words) == 2, f"not a shell export: {line!r}"
        name, _, value = words[1].partition("=")
        env[name] = value
    return env


@contextmanager
def user_server(data_dir: Path, **settings: str) -> Iterator[UserServer]:
    """``shipyard server`` on ``data_dir`` with its own store on a free port; stopped (Ctrl-C,
    so its data plane stops too) on the way out."""
    import os

    base = {**os.environ, **shipyard_env(data_dir, embedded_s3="true", **settings)}
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shipyard.cli", "server"], env=base,
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        env = None
        while env is None or "AWS_ENDPOINT_URL_S3" not in env:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"shipyard server did not start:\n{log.read_text()}")
            time.sleep(0.3)
            env = status_env(base)
        yield UserServer(data_dir, proc, env, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
