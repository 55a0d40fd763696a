"""Running the SageMaker SDK in a test as a user runs it: the environment ``server status``
prints and nothing else from AWS's world, and several SDK calls side by side, each in a
thread of its own with its printed output kept apart (as several notebooks would)."""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.user_server import UserServer

__all__ = ["Outcome", "PerThreadOutput", "run_all", "sdk_user_environment"]


@contextlib.contextmanager
def sdk_user_environment(server: UserServer, home: Path) -> Iterator[dict[str, str]]:
    """``server status``'s variables, set for the duration; every other ``AWS_*`` and
    ``SAGEMAKER_*`` variable removed, and ``~/.aws`` out of reach (empty config files)."""
    (home / "aws-config").write_text("")
    (home / "aws-credentials").write_text("")
    env = {
        **server.env,
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        # SDK 2.25x warns once per class that v3 exists; the suite turns warnings into errors.
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
    }
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("AWS_", "SAGEMAKER_")):
                mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        # boto3's default session keeps the credentials it first resolved: a module after
        # another would sign with the previous server's keys.
        mp.setattr(boto3, "DEFAULT_SESSION", None)
        yield env


@dataclass
class Outcome:
    """What one SDK run left behind: its object, or the exception it raised."""

    value: Any = None
    error: BaseException | None = None

    def get(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class PerThreadOutput(io.TextIOBase):
    """A stand-in for ``sys.stdout`` that keeps each named thread's writes apart, so runs that
    print concurrently can each be checked for their own lines."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self._parts: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def register(self, name: str) -> None:
        with self._lock:
            self._names[threading.get_ident()] = name
            self._parts.setdefault(name, [])

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        with self._lock:
            name = self._names.get(threading.get_ident(), "")
            self._parts.setdefault(name, []).append(text)
        return len(text)

    def text(self, name: str) -> str:
        with self._lock:
            return "".join(self._parts.get(name, []))


def run_all(jobs: dict[str, Callable[[], Any]]) -> tuple[dict[str, Outcome], dict[str, str]]:
    """Run each SDK call in its own thread; return outcomes and what each one printed."""
    outcomes = {name: Outcome() for name in jobs}
    output = PerThreadOutput()

    def run(name: str) -> None:
        output.register(name)
        try:
            outcomes[name].value = jobs[name]()
        except BaseException as exc:  # handed to the test that owns this run
            outcomes[name].error = exc

    # sys.stdout is process-wide: every thread's print() lands in `output`.
    with contextlib.redirect_stdout(output), ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(run, jobs))
    return outcomes, {name: output.text(name) for name in jobs}


