"""A starting plane sets aside what it cannot read or resume, and takes over the rest.

The records are written as an earlier plane (or a disk fault) left them, into a real SQLite
file; the plane under test is a real ControlPlane over the in-memory runtime.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from shipyard.control import ControlPlane
from shipyard.control.jobs import training
from shipyard.control.state.store import Store
from shipyard.errors import StorageError
from shipyard.runtimes import ContainerSpec, FakeBehaviour
from tests.support.jobs import training_request
from tests.support.planes import fake_plane

ENDPOINT_ARN = "arn:aws:sagemaker:us-east-1:000000000000:endpoint/{}"


def _says_hi(spec: ContainerSpec) -> FakeBehaviour:
    return FakeBehaviour(logs=("hi",))


def _plane(tmp: Path, handler: Any = _says_hi) -> ControlPlane:
    return fake_plane(tmp, handler)[0]


def _endpoint_row(store: Store, name: str, status: str, runner: dict[str, Any]) -> None:
    record = {"EndpointName": name, "EndpointArn": ENDPOINT_ARN.format(name),
              "EndpointConfigName": f"{name}-config", "EndpointStatus": status,
              "CreationTime": 1.0, "LastModifiedTime": 1.0}
    store.insert_job("endpoint", name, ENDPOINT_ARN.format(name), status, record, runner)


def test_a_change_returning_a_non_status_is_refused_and_nothing_is_written(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _endpoint_row(store, "ep", "Creating", {"pending": ["abc"]})
    with pytest.raises(TypeError, match="returned list"):
        store.mutate("endpoint", "ep", lambda rec, run: run.pop("pending"))
    row = store.get_job("endpoint", "ep")
    assert row.status == "Creating" and row.runner == {"pending": ["abc"]}


def test_endpoint_creating_with_a_pending_fleet_does_not_brick_the_start(
        tmp_path: Path) -> None:
    """What a SIGTERM during CreateEndpoint left: a pending deployment in the runner state.
    Clearing it once wrote a list as the status; every later start then failed."""
    plane = _plane(tmp_path)
    plane.close()
    store = Store(tmp_path / "state" / "state.db")
    _endpoint_row(store, "ep", "Creating", {"pending": ["0123abcd"]})
    plane = _plane(tmp_path)
    try:
        record = plane.wait_endpoint("ep", timeout=10)
        # Its config does not exist, so the restarted deployment fails with AWS's reason.
        assert record["EndpointStatus"] == "Failed"
        assert "endpoint configuration" in record["FailureReason"].lower()
        assert store.get_job("endpoint", "ep").runner.get("pending") is None
    finally:
        plane.close()
    # And the next start reads everything.
    _plane(tmp_path).close()


def test_an_unreadable_record_is_set_aside_and_the_rest_resumes(tmp_path: Path) -> None:
    _plane(tmp_path).close()
    store = Store(tmp_path / "state" / "state.db")
    for name in ("good", "torn"):
        # As a plane that stopped right after accepting them left them.
        req = training.validate(training_request(name, tmp_path))
        arn = f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}"
        store.insert_job("training", name, arn, "InProgress",
                         training.new_record(req, arn, 1.0), {"phase": "created"})
    with sqlite3.connect(tmp_path / "state" / "state.db") as db:
        db.execute("UPDATE jobs SET record = '{\"TrainingJobName\": \"to' WHERE name = 'torn'")
        db.execute("UPDATE jobs SET runner = '[1, 2]' WHERE name = 'good'")
    started: list[ContainerSpec] = []

    def behave(spec: ContainerSpec) -> FakeBehaviour:
        started.append(spec)
        return FakeBehaviour(logs=("done",))

    plane = _plane(tmp_path, behave)
    try:
        for name in ("torn", "good"):
            record = plane.describe("training", name)
            assert record["TrainingJobStatus"] == "Failed", name
            assert record["TrainingJobName"] == name
            assert "set it aside" in record["FailureReason"]
            assert "cannot be read" in record["FailureReason"] or "not a record" in record[
                "FailureReason"]
        assert [r["TrainingJobName"] for r in plane.list_resources("training")] == ["torn", "good"]
        # The original documents are kept.
        runner = plane.ctx.store.get_job("training", "torn").runner
        assert runner["set_aside"]["record"].startswith('{"TrainingJobName"')
        # A later job runs as usual.
        plane.create("training", training_request("after", tmp_path))
        assert plane.wait("training", "after", timeout=10)["TrainingJobStatus"] == "Completed"
    finally:
        plane.close()


def test_reading_an_unreadable_row_is_a_storage_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _endpoint_row(store, "ep", "InService", {})
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE jobs SET record = 'null'")
    with pytest.raises(StorageError, match="not a record"):
        store.get_job("endpoint", "ep")
    assert [r.name for r in store.unreadable_jobs()] == ["ep"]


def test_an_endpoint_whose_runner_state_cannot_be_resumed_is_set_aside(
        tmp_path: Path) -> None:
    _plane(tmp_path).close()
    store = Store(tmp_path / "state" / "state.db")
    # Instances recorded in a shape no version wrote.
    _endpoint_row(store, "odd", "InService", {
        "uid": "u1", "specs": [{"unexpected": True}], "instances": {}})
    _endpoint_row(store, "fine", "Deleting", {})
    plane = _plane(tmp_path)
    try:
        record = plane.describe("endpoint", "odd")
        assert record["EndpointStatus"] == "Failed"
        assert "set it aside" in record["FailureReason"]
        # The other endpoint is taken over as usual: its delete finishes.
        deadline = time.monotonic() + 10
        while any(r.name == "fine" for r in plane.ctx.store.list_jobs("endpoint")):
            assert time.monotonic() < deadline, "the pending delete was not finished"
            time.sleep(0.05)
    finally:
        plane.close()
