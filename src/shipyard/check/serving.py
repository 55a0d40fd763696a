"""Dynamic serving checks: run ``serve`` as SageMaker hosting does and probe it.

Up to three containers run side by side, each ``docker run IMAGE serve`` with the model
mounted read-only at ``/opt/ml/model``:

- the main one, port 8080: ``serve-ping-ready`` (polls ``/ping`` from the start; at the
  first 200 it posts the sample payload at once: a failure then and a success later means
  ``/ping`` said ready before the model was), ``serve-invocations``, then
  ``serve-sigterm-drain`` (SIGTERM while a request is in flight);
- ``SAGEMAKER_BIND_TO_PORT`` set to another port, when the image is labelled for it;
- ``SAGEMAKER_MULTI_MODEL=true``, when the image is labelled multi-models.

A server that exits, or says its model cannot load, fails at once rather than at the end of
the health-check time, naming the model it was given and the options that give another.
"""

from __future__ import annotations

import http.client
import re
import select
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from shipyard.check import model
from shipyard.check.model import CheckInfo, CheckResult, Status
from shipyard.check.options import CheckOptions, Payload
from shipyard.check.sandbox import LOCALHOST, Container, Reply, Sandbox, http_request
from shipyard.contract.archives import safe_extract
from shipyard.contract.serving import (
    BIND_TO_PORT_ENV,
    BIND_TO_PORT_LABEL,
    INVOCATIONS_PATH,
    MULTI_MODEL_ENV,
    MULTI_MODEL_LABEL,
    MULTI_MODEL_ROOT,
    PING_PATH,
    SERVE_COMMAND,
    SERVING_PORT,
)
from shipyard.runtimes.base import ContainerState, Mount

__all__ = [
    "ALTERNATE_PORT",
    "check_bind_to_port",
    "check_main_server",
    "check_multi_model",
    "model_folder",
    "says_cannot_load",
]

#: The port given in SAGEMAKER_BIND_TO_PORT by the bind-to-port check.
ALTERNATE_PORT = 9080
MODEL_DIR = "/opt/ml/model"
#: Pause between two probes while waiting for a state change.
POLL_SECONDS = 0.1
#: How long the bind-to-port check keeps trying the asked port once 8080 answers.
WRONG_PORT_PATIENCE = 2.0
#: Time for a request to be accepted and read by the server before SIGTERM is sent.
IN_FLIGHT_DELAY = 1.0
#: A server still answering /ping with an error this long after its first answer gets an
#: /invocations probe every PROBE_EVERY seconds: Shipyard's toolkit says why the model
#: failed to load there, not in /ping. Not sooner, so a model that loads in a few seconds
#: gets no request before /ping says it is ready.
PROBE_AFTER = 3.0
PROBE_EVERY = 2.0
#: An error answer that says the model will never load (the toolkit's is "model failed to
#: load: ..."); "not loaded" and "is loading" are still waited for.
_CANNOT_LOAD = re.compile(
    r"model\b.{0,80}?\b(failed|fails|cannot|can't|could not|couldn't|unable) to load"
    r"|\b(failed|fails|cannot|can't|could not|couldn't|unable) to load\b.{0,40}?\bmodel",
    re.IGNORECASE | re.DOTALL)
_MODEL_OPTIONS = ("give the model to serve with --model DIR|FILE.tar.gz, or training data "
                  "with --channel NAME=DIR so that train-completes trains the model served")


def model_folder(sandbox: Sandbox, options: CheckOptions, trained: Path | None) -> Path:
    """The folder mounted at /opt/ml/model: --model, else the trained model, else empty."""
    if options.model is not None:
        source = Path(options.model)
        if source.is_dir():
            return source.absolute()
        dest = sandbox.folder("model")
        safe_extract(source, dest)
        return dest
    if trained is not None:
        return trained
    return sandbox.folder("model")


def says_cannot_load(reply: Reply) -> bool:
    """Whether an error answer says the model cannot load (a bare 503 does not)."""
    return reply.status >= 500 and bool(
        _CANNOT_LOAD.search(reply.body[:4096].decode("utf-8", "replace")))


def _model_served(options: CheckOptions, model_dir: Path) -> str:
    if options.model is not None:
        return f"--model {options.model}"
    if not any(model_dir.iterdir()):
        return "an empty /opt/ml/model (no --model, and train-completes wrote no model)"
    return "the model train-completes wrote"


def _headers(payload: Payload) -> dict[str, str]:
    headers = {"Content-Type": payload.content_type}
    if payload.accept:
        headers["Accept"] = payload.accept
    return headers


def _start(sandbox: Sandbox, purpose: str, options: CheckOptions, model_dir: Path, *,
           env: dict[str, str] | None = None, ports: list[int] | None = None,
           extra: list[Mount] | None = None) -> Container:
    return sandbox.start(
        purpose, command=[SERVE_COMMAND], env={**options.env, **(env or {})},
        mounts=[Mount(str(model_dir), MODEL_DIR, read_only=True), *(extra or [])],
        ports=ports or [SERVING_PORT],
    )


@dataclass
class _Ready:
    """How the wait for readiness ended: the host port and when, or why not."""

    port: int = 0
    at: float = 0.0
    failure: CheckResult | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class _LoadProbe:
    """Tells a model that cannot load from one still loading, while /ping is not 200: from
    /ping's own answer, else from an occasional /invocations (see :data:`PROBE_AFTER`)."""

    payload: Payload
    timeout: float
    erring_since: float | None = None
    next_probe: float = 0.0

    def failed(self, port: int, ping: Reply) -> tuple[str, Reply] | None:
        """The path and answer that said the model cannot load, if one did."""
        if says_cannot_load(ping):
            return PING_PATH, ping
        if ping.status in (0, 200):
            return None
        now = time.monotonic()
        if self.erring_since is None:
            self.erring_since = now
        if now - self.erring_since < PROBE_AFTER or now < self.next_probe:
            return None
        self.next_probe = now + PROBE_EVERY
        reply = _invoke(port, self.payload, self.timeout)
        return (INVOCATIONS_PATH, reply) if says_cannot_load(reply) else None


def _probe(options: CheckOptions) -> _LoadProbe:
    return _LoadProbe(options.payload or Payload(b""), options.timeouts.ping)


def _cannot_load(info: CheckInfo, container: Container, options: CheckOptions,
                 model_dir: Path, said: tuple[str, Reply], prefix: str = "") -> CheckResult:
    path, reply = said
    tail = container.log_tail()
    return CheckResult(
        info, Status.FAIL,
        f"{prefix}the model cannot load: {path} answered {reply.describe()} "
        f"{container.elapsed():.1f} s after start (model served: "
        f"{_model_served(options, model_dir)})"
        + (f"; last log lines:\n{tail}" if tail else ""),
        f"If the model is missing or wrong, {_MODEL_OPTIONS}; otherwise the log says why "
        "loading failed.")


def _exited(info: CheckInfo, container: Container, state: ContainerState,
            options: CheckOptions, model_dir: Path, what: str) -> CheckResult:
    return CheckResult(
        info, Status.FAIL,
        f"{what} (model served: {_model_served(options, model_dir)}): "
        f"{container.ended(state)}",
        f"Read the log lines above; if the model is missing or wrong, {_MODEL_OPTIONS}.")


def _wait_ping(container: Container, info: CheckInfo, options: CheckOptions,
               model_dir: Path, container_port: int) -> _Ready:
    timeouts = options.timeouts
    deadline = container.started + timeouts.health
    last = Reply(0, error="not tried")
    probe = _probe(options)
    while time.monotonic() < deadline:
        state = container.exited()
        if state is not None:
            return _Ready(failure=_exited(info, container, state, options, model_dir,
                                          "the server exited before /ping answered 200"))
        port = container.host_port(container_port)
        if port:
            last = http_request(port, "GET", PING_PATH, timeout=timeouts.ping)
            if last.status == 200:
                return _Ready(port=port, at=container.elapsed())
            said = probe.failed(port, last)
            if said is not None:
                return _Ready(failure=_cannot_load(info, container, options, model_dir, said))
        time.sleep(POLL_SECONDS)
    tail = container.log_tail()
    return _Ready(failure=CheckResult(
        info, Status.FAIL,
        f"/ping did not answer 200 within {timeouts.health:g} s (last: {last.describe()})"
        + (f"; last log lines:\n{tail}" if tail else ""),
        "Start listening on port 8080 (or SAGEMAKER_BIND_TO_PORT) quickly and answer "
        "GET /ping with 200 once the model is loaded; raise --health-timeout for slow loads."))


def _invoke(port: int, payload: Payload, timeout: float) -> Reply:
    return http_request(port, "POST", INVOCATIONS_PATH, body=payload.body,
                        headers=_headers(payload), timeout=timeout)


def check_main_server(sandbox: Sandbox, options: CheckOptions, model_dir: Path
                      ) -> list[CheckResult]:
    """``serve-ping-ready``, ``serve-invocations`` and ``serve-sigterm-drain``, in order."""
    ping_info, invoke_info, drain_info = (
        model.SERVE_PING_READY, model.SERVE_INVOCATIONS, model.SERVE_SIGTERM_DRAIN)
    container = _start(sandbox, "serve", options, model_dir)
    ready = _wait_ping(container, ping_info, options, model_dir, SERVING_PORT)
    if ready.failure is not None:
        why = "skipped: the server never became ready (see serve-ping-ready)"
        return [ready.failure, CheckResult(invoke_info, Status.SKIP, why),
                CheckResult(drain_info, Status.SKIP, why)]
    ping, invoke = _readiness(container, ready, options)
    drain = _drain(container, ready.port, options)
    return [ping, invoke, drain]


def _readiness(container: Container, ready: _Ready, options: CheckOptions
               ) -> tuple[CheckResult, CheckResult]:
    ping_info, invoke_info = model.SERVE_PING_READY, model.SERVE_INVOCATIONS
    timeouts = options.timeouts
    said = f"/ping answered 200 {ready.at:.1f} s after start"
    payload = options.payload
    if payload is None:
        return (CheckResult(ping_info, Status.PASS,
                            f"{said} (not compared with /invocations: no --payload)"),
                CheckResult(invoke_info, Status.SKIP,
                            "no sample payload: give --payload FILE --content-type TYPE"))
    first = _invoke(ready.port, payload, timeouts.invocation)
    if first.ok:
        return (CheckResult(ping_info, Status.PASS,
                            f"{said}; /invocations answered at once ({first.status})"),
                CheckResult(invoke_info, Status.PASS,
                            f"HTTP {first.status} in {first.seconds:.2f} s, "
                            f"{len(first.body)} bytes"))
    if 400 <= first.status < 500:
        return (CheckResult(ping_info, Status.PASS, f"{said}"),
                CheckResult(invoke_info, Status.FAIL,
                            f"the sample payload was refused: {first.describe()}",
                            "Check --payload/--content-type match what input_fn accepts."))
    # Not ready after all? Retry until it works or the health-check time is spent.
    deadline = max(container.started + timeouts.health, time.monotonic() + timeouts.ping)
    later = first
    while time.monotonic() < deadline and container.exited() is None:
        time.sleep(POLL_SECONDS * 2)
        later = _invoke(ready.port, payload, timeouts.invocation)
        if later.ok or 400 <= later.status < 500 or says_cannot_load(later):
            break
    if later.ok:
        return (CheckResult(ping_info, Status.FAIL,
                            f"{said}, but /invocations then failed ({first.describe()}) and "
                            f"only succeeded {container.elapsed():.1f} s after start: /ping "
                            "said ready before the model was"),
                CheckResult(invoke_info, Status.PASS,
                            f"HTTP {later.status} once loaded, {len(later.body)} bytes"))
    state = container.exited()
    ended = f"; the server exited: {container.ended(state)}" if state is not None else ""
    return (CheckResult(ping_info, Status.PASS,
                        f"{said} (/invocations never succeeded: see serve-invocations)"),
            CheckResult(invoke_info, Status.FAIL,
                        f"first answer: {first.describe()}; last: {later.describe()}{ended}"))


def _drain(container: Container, port: int, options: CheckOptions) -> CheckResult:
    info = model.SERVE_SIGTERM_DRAIN
    timeouts = options.timeouts
    payload = options.slow_payload or options.payload
    conn: http.client.HTTPConnection | None = None
    note = "no request in flight (no --payload)"
    if payload is not None:
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=timeouts.invocation)
        try:
            conn.request("POST", INVOCATIONS_PATH, body=payload.body, headers=_headers(payload))
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            return CheckResult(info, Status.FAIL, f"could not send the request: {exc}")
        time.sleep(IN_FLIGHT_DELAY)
        sock = conn.sock
        answered = bool(sock is not None and select.select([sock], [], [], 0)[0])
        note = ("the request already answered (give --slow-payload for one that takes a "
                "while)" if answered else "a request in flight")
    container.signal(signal.SIGTERM)
    sent = container.elapsed()
    reply: Reply | None = None
    if conn is not None:
        started = time.monotonic()
        try:
            response = conn.getresponse()
            reply = Reply(response.status, response.read(), seconds=time.monotonic() - started)
        except (OSError, http.client.HTTPException) as exc:
            reply = Reply(0, error=f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()
    state = container.wait(max(0.0, timeouts.serve_grace - (container.elapsed() - sent)))
    if reply is not None and not reply.ok:
        return CheckResult(info, Status.FAIL,
                           f"SIGTERM with {note}: the request got {reply.describe()} instead "
                           "of its answer")
    if state is None:
        return CheckResult(info, Status.FAIL,
                           f"still running {timeouts.serve_grace:g} s after SIGTERM ({note}): "
                           "SageMaker would SIGKILL it")
    return CheckResult(info, Status.PASS,
                       f"SIGTERM with {note}: "
                       + (f"answered {reply.status}; " if reply is not None else "")
                       + f"exited with code {state.exit_code} "
                       f"{container.elapsed() - sent:.1f} s after SIGTERM")


def check_bind_to_port(sandbox: Sandbox, options: CheckOptions, model_dir: Path,
                       labels: dict[str, str]) -> CheckResult:
    info = model.SERVE_BIND_TO_PORT
    if labels.get(BIND_TO_PORT_LABEL) != "true":
        return CheckResult(info, Status.SKIP, f"not labelled {BIND_TO_PORT_LABEL}=true")
    timeouts = options.timeouts
    container = _start(sandbox, "serve-port", options, model_dir,
                       env={BIND_TO_PORT_ENV: str(ALTERNATE_PORT)},
                       ports=[ALTERNATE_PORT, SERVING_PORT])
    deadline = container.started + timeouts.health
    wrong_since: float | None = None
    last = Reply(0, error="not tried")
    probe = _probe(options)
    with_port = f"with {BIND_TO_PORT_ENV}={ALTERNATE_PORT}"
    while time.monotonic() < deadline:
        state = container.exited()
        if state is not None:
            return _exited(info, container, state, options, model_dir,
                           f"{with_port} the server exited")
        asked = container.host_port(ALTERNATE_PORT)
        default = container.host_port(SERVING_PORT)
        if asked and default:
            last = http_request(asked, "GET", PING_PATH, timeout=timeouts.ping)
            if last.status == 200:
                return CheckResult(info, Status.PASS,
                                   f"/ping answered 200 on port {ALTERNATE_PORT} "
                                   f"({BIND_TO_PORT_ENV}) {container.elapsed():.1f} s after "
                                   "start")
            said = probe.failed(asked, last)
            if said is not None:
                return _cannot_load(info, container, options, model_dir, said,
                                    f"{with_port}: ")
            if wrong_since is None:
                other = http_request(default, "GET", PING_PATH, timeout=timeouts.ping)
                if other.status == 200:
                    wrong_since = time.monotonic()
            elif time.monotonic() - wrong_since > WRONG_PORT_PATIENCE:
                return CheckResult(info, Status.FAIL,
                                   f"with {BIND_TO_PORT_ENV}={ALTERNATE_PORT} the server "
                                   f"answered /ping on {SERVING_PORT} instead (port "
                                   f"{ALTERNATE_PORT}: {last.describe()})")
        time.sleep(POLL_SECONDS)
    return CheckResult(info, Status.FAIL,
                       f"with {BIND_TO_PORT_ENV}={ALTERNATE_PORT}, no /ping 200 on that port "
                       f"within {timeouts.health:g} s (last: {last.describe()})")


def check_multi_model(sandbox: Sandbox, options: CheckOptions, model_dir: Path,
                      labels: dict[str, str]) -> CheckResult:
    info = model.SERVE_MULTI_MODEL
    if labels.get(MULTI_MODEL_LABEL) != "true":
        return CheckResult(info, Status.SKIP, f"not labelled {MULTI_MODEL_LABEL}=true")
    models = sandbox.folder("models")
    container = _start(sandbox, "serve-mme", options, model_dir,
                       env={MULTI_MODEL_ENV: "true"},
                       extra=[Mount(str(models), MULTI_MODEL_ROOT, read_only=True)])
    ready = _wait_ping(container, info, options, model_dir, SERVING_PORT)
    if ready.failure is not None:
        return CheckResult(info, Status.FAIL, f"with {MULTI_MODEL_ENV}=true: "
                           + ready.failure.detail, ready.failure.fix)
    listed = http_request(ready.port, "GET", "/models", timeout=options.timeouts.ping)
    if listed.status != 200:
        return CheckResult(info, Status.FAIL,
                           f"GET /models answered {listed.describe()} (want 200 with "
                           "{\"models\": [...]})")
    return CheckResult(info, Status.PASS,
                       f"GET /models answered 200 ({listed.body[:80].decode('utf-8', 'replace')})")
