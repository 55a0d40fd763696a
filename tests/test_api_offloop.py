"""Control-plane handlers run off the event loop that answers InvokeEndpoint (issue 11): a
real server on an ephemeral port, a real endpoint behind it (the process runtime's stdlib
``serve``), and handlers added to the app's own handler table that block until told to."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from shipyard.api.app import HANDLER_THREADS
from shipyard.api.server import ApiServer
from shipyard.control import ControlPlane
from shipyard.errors import ValidationError
from shipyard.settings import Settings
from tests.test_api_runtime import Api, delete_endpoints, deploy, serve_project

ENDPOINT = "offloop-ep"
JSON = "application/x-amz-json-1.1"
#: How long a blocked handler waits to be released: past it, the test fails, never hangs.
HOLD_SECONDS = 20.0

Handler = Callable[[ControlPlane, dict[str, Any]], dict[str, Any]]


def settings_for(data: Path) -> Settings:
    return Settings.load({"data_dir": str(data / "state"), "api_port": 0,
                          "runtime": "process", "stop_grace_seconds": 2}, environ={})


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("offloop")
    plane = ControlPlane(settings_for(data))
    server = ApiServer(plane.settings, plane)
    client = Api(server, server.start_in_thread())
    try:
        record = deploy(client, ENDPOINT, serve_project(data / "project"))
        assert record["EndpointStatus"] == "InService", record.get("FailureReason")
        yield client
    finally:
        delete_endpoints(client, plane)
        server.stop()
        plane.close()


@pytest.fixture
def add_handler(api: Api) -> Iterator[Callable[[str, Handler], None]]:
    """Put a handler under ``Shipyard.<name>``; taken out again after the test."""
    table = api.server.app.handlers["shipyard"]
    added: list[str] = []

    def add(name: str, handler: Handler) -> None:
        table[name] = handler
        added.append(name)

    yield add
    for name in added:
        del table[name]


def call(api: Api, operation: str) -> tuple[int, dict[str, Any]]:
    status, _, body = api.raw("/", b"{}", headers={"X-Amz-Target": f"Shipyard.{operation}",
                                                  "Content-Type": JSON})
    return status, json.loads(body)


class Gate:
    """A handler that blocks until released, saying when it has started."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.thread: threading.Thread | None = None

    def __call__(self, plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        self.thread = threading.current_thread()
        self.entered.set()
        return {"Released": self.release.wait(HOLD_SECONDS)}


def test_invocation_and_describe_are_answered_while_every_handler_thread_is_held(
        api: Api, add_handler: Callable[[str, Handler], None]) -> None:
    gates = [Gate() for _ in range(HANDLER_THREADS)]
    for i, gate in enumerate(gates):
        add_handler(f"Gate{i}", gate)
    with ThreadPoolExecutor(HANDLER_THREADS) as caller:
        held = [caller.submit(call, api, f"Gate{i}") for i in range(HANDLER_THREADS)]
        try:
            assert all(gate.entered.wait(HOLD_SECONDS) for gate in gates)
            reply = api.rt.invoke_endpoint(EndpointName=ENDPOINT, Body=b"while blocked")
            assert json.loads(reply["Body"].read())["body"] == "while blocked"
            # Describe, what SDK waiters poll, is answered on the loop too.
            described = api.sm.describe_endpoint(EndpointName=ENDPOINT)
            assert described["EndpointStatus"] == "InService"
            assert not any(future.done() for future in held)
        finally:
            for gate in gates:
                gate.release.set()
        assert [future.result(HOLD_SECONDS) for future in held] == [
            (200, {"Released": True})] * HANDLER_THREADS


def test_a_request_waits_for_a_handler_thread_and_is_then_answered(
        api: Api, add_handler: Callable[[str, Handler], None]) -> None:
    gates = [Gate() for _ in range(HANDLER_THREADS + 1)]
    for i, gate in enumerate(gates):
        add_handler(f"Gate{i}", gate)
    with ThreadPoolExecutor(len(gates)) as caller:
        held = [caller.submit(call, api, f"Gate{i}") for i in range(HANDLER_THREADS)]
        try:
            assert all(gate.entered.wait(HOLD_SECONDS) for gate in gates[:-1])
            queued = caller.submit(call, api, f"Gate{HANDLER_THREADS}")
            gates[0].release.set()
            assert gates[-1].entered.wait(HOLD_SECONDS)
        finally:
            for gate in gates:
                gate.release.set()
        assert [f.result(HOLD_SECONDS) for f in [*held, queued]] == [
            (200, {"Released": True})] * len(gates)


def test_handler_errors_leave_in_the_aws_envelope_as_before(
        api: Api, add_handler: Callable[[str, Handler], None],
        caplog: pytest.LogCaptureFixture) -> None:
    def refuse(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        raise ValidationError("no, thank you")

    def crash(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("a bug")

    add_handler("Refuse", refuse)
    add_handler("Crash", crash)
    assert call(api, "Refuse") == (400, {"__type": "ValidationException",
                                         "message": "no, thank you"})
    with caplog.at_level(logging.ERROR, logger="shipyard.api.app"):
        status, body = call(api, "Crash")
    assert (status, body["__type"]) == (500, "InternalFailure")
    assert body["message"].startswith("Internal error (RuntimeError); request id ")
    request_id = body["message"].rsplit(" ", 1)[1]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"request {request_id} failed" in logged
    assert "RuntimeError: a bug" in logged and "in crash" in logged


def test_stopping_the_server_ends_the_handler_threads(tmp_path: Path) -> None:
    plane = ControlPlane(settings_for(tmp_path))
    server = ApiServer(plane.settings, plane)
    client = Api(server, server.start_in_thread())
    gate = Gate()
    gate.release.set()
    server.app.handlers["shipyard"]["Gate"] = gate
    try:
        assert call(client, "Gate") == (200, {"Released": True})
        assert gate.thread is not None and gate.thread is not threading.current_thread()
        assert gate.thread.is_alive()  # the pool keeps its threads between requests
    finally:
        server.stop()
        plane.close()
    assert not gate.thread.is_alive()
