"""Dynamic training checks: run ``train`` as SageMaker does, four times, side by side.

Each run gets its own ``/opt/ml`` (a host folder mounted whole, config files written as
SageMaker writes them, channels under ``input/data``) and runs ``docker run IMAGE train``
with hostname ``algo-1``:

- ``train-completes``: the fixture channels and hyperparameters; exit 0 and a model;
- ``train-failure-file``: the broken input; non-zero exit and ``output/failure``;
- ``train-sigterm``: the slow hyperparameters; SIGTERM once the program is busy (``--sigterm-after``
  seconds after its first output line), then the grace period. Beside it the same run gets no
  signal: an exit within the grace counts as handling SIGTERM only if that run is still
  training a while later (:data:`SIGTERM_MARGIN_SECONDS`), since a ``train`` that ignores the
  signal (PID 1 with no handler) but finishes on its own looks the same from outside.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shipyard.check import model
from shipyard.check.model import CheckInfo, CheckResult, Status
from shipyard.check.options import CheckOptions
from shipyard.check.sandbox import Container, Sandbox
from shipyard.contract import (
    FAILURE_REASON_MAX,
    OptMl,
    input_data_config,
    training_resource_config,
    write_json,
)
from shipyard.contract import hyperparameters as hyperparameters_json
from shipyard.contract.env import TRAINING_JOB_NAME
from shipyard.errors import ShipyardError
from shipyard.runtimes.base import ContainerState, Mount

__all__ = [
    "DEFAULT_CHANNEL",
    "FIXTURE_CSV",
    "GARBAGE",
    "TrainRun",
    "check_failure_file",
    "check_sigterm",
    "check_train_completes",
]

DEFAULT_CHANNEL = "training"
#: The default fixture: one small numeric CSV in the ``training`` channel.
FIXTURE_CSV = b"1.0,2.0,3.0\n4.0,5.0,6.0\n7.0,8.0,9.0\n"
#: The default broken input: bytes no data loader accepts.
GARBAGE = b"\x00\xff\xfe garbage \x00" + bytes(range(256)) + b"\x89PNG\r\n\x1a\n not,a,csv\n"
CONTAINER_ROOT = "/opt/ml"
HOSTNAME = "algo-1"
_DATA_FILE = "data.csv"
#: A training program that prints nothing gets SIGTERM this much later than one that talks.
SILENT_START_SECONDS = 10.0
#: How much longer than the signalled run the unsignalled one must be seen training for the
#: signalled run's exit to be put down to SIGTERM (more than the two runs' start-up jitter).
SIGTERM_MARGIN_SECONDS = 2.0
_POLL_SECONDS = 0.1


@dataclass
class TrainRun:
    """One training run's container and host root."""

    container: Container
    root: Path

    @property
    def layout(self) -> OptMl:
        return OptMl.at(self.root)


def _start(sandbox: Sandbox, purpose: str, options: CheckOptions,
           channels: dict[str, Path | bytes], hyperparameters: dict[str, str]) -> TrainRun:
    root = sandbox.folder(purpose)
    layout = OptMl.at(root)
    mounts = [Mount(str(root), CONTAINER_ROOT)]
    def folder(path: object) -> Path:
        return sandbox.folder(purpose, *Path(str(path)).relative_to(root).parts)

    for channel, source in sorted(channels.items()):
        host = folder(layout.channel_dir(channel))
        if isinstance(source, bytes):
            (host / _DATA_FILE).write_bytes(source)
        else:
            # The user's folder, as it is, read-only (SageMaker's File mode is a copy).
            mounts.append(Mount(str(Path(source).absolute()),
                                str(OptMl().channel_dir(channel)), read_only=True))
    for path in (layout.input_config_dir, layout.model_dir, layout.output_data_dir):
        folder(path)
    write_json(Path(layout.hyperparameters_file), hyperparameters_json(hyperparameters))
    write_json(Path(layout.resource_config_file),
               training_resource_config(HOSTNAME, [HOSTNAME], "local"))
    write_json(Path(layout.input_data_config_file),
               input_data_config([{"ChannelName": c} for c in sorted(channels)]))
    env = {TRAINING_JOB_NAME: f"shipyard-check-{sandbox.run_id}-{purpose}", **options.env}
    container = sandbox.start(purpose, command=["train"], env=env, mounts=mounts,
                              hostname=HOSTNAME)
    return TrainRun(container, root)


def good_channels(options: CheckOptions) -> dict[str, Path | bytes]:
    if options.channels:
        return dict(options.channels)
    return {DEFAULT_CHANNEL: FIXTURE_CSV}


def _fixture_words(options: CheckOptions, hyperparameters: dict[str, str]) -> str:
    channels = ", ".join(sorted(good_channels(options)))
    hps = ", ".join(f"{k}={v}" for k, v in sorted(hyperparameters.items())) or "none"
    return f"channels: {channels}; hyperparameters: {hps}"


def _timeout(info: CheckInfo, run: TrainRun, seconds: float) -> CheckResult:
    tail = run.container.log_tail()
    return CheckResult(info, Status.FAIL,
                       f"still running after {seconds:g} s (the run's limit)"
                       + (f"; last log lines:\n{tail}" if tail else ""),
                       "Make the fixture run short (small data, few epochs), or raise "
                       "--train-timeout.")


def _model_files(run: TrainRun) -> list[Path]:
    folder = Path(run.layout.model_dir)
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def check_train_completes(sandbox: Sandbox, options: CheckOptions
                          ) -> tuple[CheckResult, Path | None]:
    """The result, and the model folder it wrote (for the serve checks) when it passed."""
    info = model.TRAIN_COMPLETES
    run = _start(sandbox, "train", options, good_channels(options), options.hyperparameters)
    state = run.container.wait(options.timeouts.train)
    if state is None:
        return _timeout(info, run, options.timeouts.train), None
    seconds = run.container.elapsed()
    fixture = _fixture_words(options, options.hyperparameters)
    if state.exit_code != 0:
        reason = _failure_reason(run)
        return CheckResult(info, Status.FAIL,
                           f"{run.container.ended(state)}"
                           + (f"\nFailureReason: {reason}" if reason else "")
                           + f"\n({fixture})"), None
    files = _model_files(run)
    if not files:
        return CheckResult(info, Status.FAIL,
                           f"exit code 0 after {seconds:.1f} s, but /opt/ml/model is empty: "
                           f"SageMaker would upload an empty model.tar.gz ({fixture})",
                           "Save the trained model under /opt/ml/model (SM_MODEL_DIR)."), None
    size = sum(p.stat().st_size for p in files)
    names = ", ".join(str(p.relative_to(run.layout.model_dir)) for p in files[:5])
    return CheckResult(info, Status.PASS,
                       f"exit code 0 after {seconds:.1f} s; model: {names} "
                       f"({len(files)} files, {size} bytes); {fixture}",
                       seconds=seconds), Path(run.layout.model_dir)


def _failure_reason(run: TrainRun) -> str:
    path = Path(run.layout.failure_file)
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return ""
    first = text.strip().splitlines()[:1]
    return (first[0][:200] if first else "") if text.strip() else ""


def check_failure_file(sandbox: Sandbox, options: CheckOptions) -> CheckResult:
    info = model.TRAIN_FAILURE_FILE
    channels = good_channels(options)
    hyperparameters = {**options.hyperparameters, **options.bad_hyperparameters}
    if options.user_bad_input:
        channels.update(options.bad_channels)
        given = "the broken input given (" + ", ".join(
            [f"channel {c}" for c in sorted(options.bad_channels)]
            + [f"{k}={v}" for k, v in sorted(options.bad_hyperparameters.items())]) + ")"
    else:
        channels = dict.fromkeys(channels, GARBAGE)
        given = "garbage bytes in every channel"
    run = _start(sandbox, "train-bad-input", options, channels, hyperparameters)
    state = run.container.wait(options.timeouts.train)
    if state is None:
        return _timeout(info, run, options.timeouts.train)
    failure = Path(run.layout.failure_file)
    if state.exit_code == 0:
        if options.user_bad_input:
            return CheckResult(info, Status.FAIL,
                               f"exit code 0 with {given}: SageMaker would mark the job "
                               "Completed", "Validate the input and exit non-zero when it is "
                               "unusable, after writing /opt/ml/output/failure.")
        return CheckResult(info, Status.WARN,
                           f"exit code 0 with {given}: the job would be Completed, so failure "
                           "reporting was not exercised",
                           "Give an input you know is broken: --bad-channel NAME=DIR or "
                           "--bad-hyperparameter KEY=VALUE.")
    size = failure.stat().st_size if failure.is_file() else 0
    if size == 0:
        return CheckResult(info, Status.FAIL,
                           f"{given}: {run.container.ended(state)}\nbut no /opt/ml/output/"
                           "failure was written, so the job's FailureReason would be empty")
    note = f"; only the first {FAILURE_REASON_MAX} become FailureReason" \
        if size > FAILURE_REASON_MAX else ""
    return CheckResult(info, Status.PASS,
                       f"{given}: exit code {state.exit_code}; /opt/ml/output/failure "
                       f"({size} bytes{note}): {_failure_reason(run)}",
                       seconds=run.container.elapsed())


@dataclass
class _Watch:
    """A run seen from outside, in the engine's epoch seconds (a poll delayed by a busy host
    shifts nothing): when its first output line was written, when it ended."""

    run: TrainRun
    first_output: float | None = None
    state: ContainerState | None = None

    def poll(self) -> None:
        if self.state is not None:
            return
        container = self.run.container
        if self.first_output is None:
            self.first_output = container.first_output_at()
        self.state = container.exited()

    @property
    def ended(self) -> float:
        if self.state is not None and self.state.finished_at is not None:
            return self.state.finished_at
        return time.time()

    def busy_for(self, at: float | None = None) -> float:
        """Seconds of training at ``at`` (default: its end, or now), counted from the first
        output line so that start-up times do not count (from the start for a silent one)."""
        since = self.first_output
        if since is None:
            since = time.time() - self.run.container.elapsed()
        return (self.ended if at is None else at) - since


def _watch_until(done: Callable[[], bool], deadline: float, *watches: _Watch) -> bool:
    """Poll every run until ``done()`` or the (monotonic) ``deadline``; whether ``done()``."""
    while True:
        for watch in watches:
            watch.poll()
        if done():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)


def _busy(watch: _Watch, after: float) -> bool:
    """Whether the program is surely running: ``after`` seconds past its first output line (a
    process still starting has no signal handler yet, and as PID 1 it would ignore the
    signal), or ``after`` + :data:`SILENT_START_SECONDS` for a program that prints nothing."""
    if watch.first_output is not None:
        return time.time() >= watch.first_output + after
    return watch.run.container.elapsed() >= after + SILENT_START_SECONDS


def check_sigterm(sandbox: Sandbox, options: CheckOptions) -> CheckResult:
    hyperparameters = {**options.hyperparameters, **options.slow_hyperparameters}
    channels = good_channels(options)
    signalled = _Watch(_start(sandbox, "train-sigterm", options, channels, hyperparameters))
    unsignalled = _Watch(_start(sandbox, "train-unsignalled", options, channels,
                                hyperparameters))
    try:
        return _judge_sigterm(signalled, unsignalled, options)
    finally:
        # Only its timing matters: it need not train to the end.
        with contextlib.suppress(ShipyardError):
            unsignalled.run.container.signal(signal.SIGKILL)


def _judge_sigterm(signalled: _Watch, unsignalled: _Watch, options: CheckOptions
                   ) -> CheckResult:
    info = model.TRAIN_SIGTERM
    timeouts = options.timeouts
    run = signalled.run
    _watch_until(lambda: signalled.state is not None or _busy(signalled, timeouts.sigterm_after),
                 float("inf"), signalled, unsignalled)
    if signalled.state is not None:
        return CheckResult(info, Status.SKIP,
                           f"training ended ({run.container.ended(signalled.state, logs=False)})"
                           f" {run.container.elapsed():.1f} s after start, before SIGTERM could "
                           "be sent; pass --slow-hyperparameter KEY=VALUE to keep it busy")
    run.container.signal(signal.SIGTERM)
    sent, sent_at = time.time(), run.container.elapsed()
    _watch_until(lambda: signalled.state is not None, time.monotonic() + timeouts.stop_grace,
                 signalled, unsignalled)
    state = signalled.state
    if state is None:
        tail = run.container.log_tail()
        return CheckResult(info, Status.FAIL,
                           f"still running {timeouts.stop_grace:g} s after SIGTERM: SageMaker "
                           "would SIGKILL it (exit 137) and the program gets no chance to save "
                           "a checkpoint" + (f"; last log lines:\n{tail}" if tail else ""))
    exited = (f"SIGTERM {sent_at:.1f} s into training; exited with code {state.exit_code} "
              f"{signalled.ended - sent:.1f} s later (grace {timeouts.stop_grace:g} s)")
    # Did SIGTERM end it, or would it have ended then anyway? The unsignalled run tells.
    lasted = signalled.busy_for()
    _watch_until(lambda: unsignalled.state is not None
                 or unsignalled.busy_for() > lasted + SIGTERM_MARGIN_SECONDS,
                 time.monotonic() + timeouts.stop_grace + SIGTERM_MARGIN_SECONDS, unsignalled)
    if unsignalled.state is None:
        return CheckResult(info, Status.PASS,
                           f"{exited}; the same run without SIGTERM was still running "
                           f"{unsignalled.busy_for():.1f} s after its first output line",
                           seconds=run.container.elapsed())
    natural = unsignalled.busy_for()
    code = unsignalled.state.exit_code
    if natural <= signalled.busy_for(sent):
        return CheckResult(info, Status.SKIP,
                           f"training ends on its own {natural:.1f} s after its first output line, "
                           "before SIGTERM could reach it; pass --slow-hyperparameter KEY=VALUE "
                           "to keep it busy")
    return CheckResult(info, Status.FAIL,
                       f"{exited}, when training ends anyway: the same run without SIGTERM "
                       f"ended on its own (exit code {code}) {natural:.1f} s after its first "
                       f"output line (this one: {lasted:.1f} s), so nothing shows that the "
                       "signal stopped it",
                       "Handle SIGTERM in train: as PID 1 the program gets no default action, "
                       "so install a handler that saves a checkpoint and exits (or forward the "
                       "signal to it). If it does, give --slow-hyperparameter KEY=VALUE that "
                       "keeps training busy well past SIGTERM.",
                       seconds=run.container.elapsed())
