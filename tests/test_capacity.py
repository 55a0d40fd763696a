"""The capacity ledger and queue (``control.capacity``): what work reserves, the order work
waits in, and the plane's jobs and tuning trials queued through it on the in-memory runtime."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest

from shipyard.contract.instances import GIB
from shipyard.control import ControlPlane
from shipyard.control.capacity import (
    Demand,
    Ledger,
    Totals,
    demand_for,
    demand_of,
    fits,
    need_of,
    snapshot,
    totals_for,
    waiting_message,
)
from shipyard.runtimes.base import Capacity, Runtime
from shipyard.runtimes.fake import FakeBehaviour, FakeRuntime
from shipyard.settings import Settings
from tests.support.jobs import training_request
from tests.support.planes import fake_plane
from tests.support.polling import until

MACHINE = Totals(cpus=2.0, memory_bytes=24 * GIB)
LARGE = demand_for("ml.m5.large", 1, MACHINE, 4.0)


# -- what work reserves (pure) ---------------------------------------------------------------
def test_a_host_reserves_its_types_memory_and_its_cpus_over_the_overcommit() -> None:
    assert Demand(1, 0.5, 8 * GIB, "1 x ml.m5.large") == LARGE
    assert demand_for("ml.m5.large", 3, MACHINE, 1.0) == Demand(3, 6.0, 24 * GIB,
                                                                "3 x ml.m5.large")


def test_reservations_are_capped_at_the_machine() -> None:
    big = demand_for("ml.m5.4xlarge", 2, MACHINE, 4.0)  # 16 vCPUs, 64 GiB each
    assert (big.cpus, big.memory_bytes) == (2 * 2.0 / 4.0, 2 * 24 * GIB)


def test_local_and_unknown_types_reserve_nothing() -> None:
    for demand in (demand_for("local", 2, MACHINE, 4.0),
                   demand_for("ml.future.9xlarge", 1, MACHINE, 4.0)):
        assert (demand.cpus, demand.memory_bytes) == (0.0, 0)


def test_an_endpoints_variants_reserve_together() -> None:
    both = demand_of([("ml.m5.large", 2), ("ml.c5.large", 1)], MACHINE, 4.0)
    assert both == Demand(3, 1.5, 20 * GIB, "2 x ml.m5.large + 1 x ml.c5.large")


def test_what_a_record_asks_for() -> None:
    assert need_of({"ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2}}
                   ) == ("ml.m5.large", 2)
    assert need_of({"ProcessingResources": {"ClusterConfig": {
        "InstanceType": "ml.c5.xlarge", "InstanceCount": 1}}}) == ("ml.c5.xlarge", 1)
    assert need_of({"TransformResources": {"InstanceType": "ml.m5.large"}}
                   ) == ("ml.m5.large", 1)
    assert need_of({"TrainingJobDefinition": {}}) is None


def test_fitting_counts_both_dimensions_and_an_empty_machine_takes_anything() -> None:
    held = [_entry(1, LARGE), _entry(2, LARGE)]
    assert not fits(LARGE, held, Totals(2.0, 20 * GIB))     # memory: 24 > 20
    assert fits(LARGE, held, MACHINE)                        # 24 GiB, 1.5 CPUs
    assert not fits(LARGE, held, Totals(1.0, 24 * GIB))     # CPU: 1.5 > 1
    assert fits(demand_for("ml.m5.4xlarge", 4, MACHINE, 4.0), [], MACHINE)
    assert fits(LARGE, held, Totals(0.0, 0))                 # nothing known: no limit


def test_the_waiting_message_says_what_and_where() -> None:
    ledger_free = waiting_message(_ticket(ahead=3, used_cpus=1.0, used_memory=20 * GIB),
                                  MACHINE)
    assert ledger_free == ("Waiting for capacity: needs 8.0 GiB memory and 0.5 CPU "
                           "(1 x ml.m5.large); 4.0 GiB and 1 CPU free; 3 ahead in the queue")


# -- the ledger --------------------------------------------------------------------------------
@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "capacity.db")


def test_work_is_admitted_whole_and_in_order(ledger: Ledger) -> None:
    totals = Totals(2.0, 20 * GIB)
    assert ledger.request("training", "a", "", LARGE, totals).held
    two = demand_for("ml.m5.large", 2, totals, 4.0)
    b = ledger.request("training", "b", "", two, totals)     # 8 + 16 > 20: waits, whole
    assert (b.held, b.ahead) == (False, 0)
    c = ledger.request("training", "c", "", LARGE, totals)   # would fit, but b is first
    assert (c.held, c.ahead) == (False, 1)
    ledger.release("training", "a")
    assert ledger.request("training", "c", "", LARGE, totals).held is False
    assert ledger.request("training", "b", "", two, totals).held
    ledger.release("training", "b")
    assert ledger.request("training", "c", "", LARGE, totals).held


def test_work_that_never_fits_runs_alone_when_first(ledger: Ledger) -> None:
    totals = Totals(2.0, 16 * GIB)
    huge = demand_for("ml.m5.large", 4, totals, 4.0)          # 32 GiB on a 16 GiB machine
    assert ledger.request("training", "a", "", LARGE, totals).held
    assert not ledger.request("training", "huge", "", huge, totals).held
    ledger.release("training", "a")
    assert ledger.request("training", "huge", "", huge, totals).held
    assert not ledger.request("training", "z", "", LARGE, totals).held


def test_a_fleet_is_fitted_beside_all_but_the_fleet_it_replaces(ledger: Ledger) -> None:
    totals = Totals(2.0, 16 * GIB)
    two = demand_for("ml.m5.large", 2, totals, 4.0)
    assert ledger.request("endpoint", "ep", "blue", two, totals).held
    assert ledger.request("endpoint", "ep", "green", two, totals, beside="blue").held
    assert not ledger.request("training", "job", "", LARGE, totals).held
    ledger.release("endpoint", "ep", "blue")
    assert not ledger.request("training", "job", "", LARGE, totals).held  # green holds 16
    ledger.release("endpoint", "ep")
    assert ledger.request("training", "job", "", LARGE, totals).held


def test_a_restarted_creation_takes_over_its_entry(ledger: Ledger) -> None:
    totals = Totals(2.0, 8 * GIB)
    assert ledger.request("training", "a", "", LARGE, totals).held
    ledger.request("endpoint", "ep", "uid-1", LARGE, totals)
    ledger.request("training", "b", "", LARGE, totals)
    again = ledger.request("endpoint", "ep", "uid-2", LARGE, totals)
    assert (again.held, again.ahead) == (False, 0)
    assert [(e.owner, e.unit) for e in ledger.entries()] == [("a", ""), ("ep", "uid-2"),
                                                             ("b", "")]


def test_the_order_outlives_the_process(tmp_path: Path) -> None:
    totals = Totals(2.0, 8 * GIB)
    first = Ledger(tmp_path / "capacity.db")
    for name in ("a", "b", "c", "d"):
        first.request("training", name, "", LARGE, totals)
    first.close()
    again = Ledger(tmp_path / "capacity.db")
    assert again.request("training", "d", "", LARGE, totals).ahead == 2
    assert [(e.owner, e.held) for e in again.entries()] == [
        ("a", True), ("b", False), ("c", False), ("d", False)]
    gone = again.sweep(lambda e: e.owner != "a")
    assert [e.owner for e in gone] == ["a"]
    assert again.request("training", "d", "", LARGE, totals).ahead == 1
    assert again.hold("training", "running", "", LARGE)
    assert not again.hold("training", "running", "", LARGE)


# -- settings and runtimes ---------------------------------------------------------------------
def test_settings_override_the_runtimes_capacity(tmp_path: Path) -> None:
    plane, _ = fake_plane(tmp_path, capacity=Capacity(2.0, 24 * GIB), capacity_cpus="3",
                          capacity_memory_mb=2048)
    try:
        assert totals_for(plane.ctx) == Totals(3.0, 2 * GIB)
    finally:
        plane.close()
    plane, _ = fake_plane(tmp_path / "b")
    try:
        assert totals_for(plane.ctx) is None  # the fake knows no capacity: nothing queues
    finally:
        plane.close()
    with pytest.raises(Exception, match="cpu_overcommit"):
        Settings.load({"cpu_overcommit": "0"}, environ={})


def test_a_runtime_that_places_by_reservation_bypasses_the_ledger(tmp_path: Path) -> None:
    class Scheduling(FakeRuntime):
        places_by_reservation = True

    runtime = Scheduling(capacity=Capacity(2.0, 24 * GIB))
    plane = ControlPlane(Settings.load({"data_dir": str(tmp_path / "state")}, environ={}),
                         runtime)
    try:
        assert totals_for(plane.ctx) is None
        assert Runtime.places_by_reservation is False
    finally:
        plane.close()


# -- through the plane -------------------------------------------------------------------------
def _status(plane: ControlPlane, name: str) -> tuple[str, str, str]:
    record = plane.describe("training", name)
    return (record["TrainingJobStatus"], record["SecondaryStatus"],
            record.get("StatusMessage", ""))


def test_jobs_wait_for_capacity_and_start_in_order(tmp_path: Path) -> None:
    plane, runtime = fake_plane(tmp_path, lambda spec: FakeBehaviour(duration=None),
                                capacity_memory_mb=16 * 1024)  # two ml.m5.large
    try:
        names = [f"q{i}" for i in range(4)]
        for name in names:
            plane.create("training", training_request(name, tmp_path))
        until("two running", lambda: len(runtime.started) == 2, 10, poll=0.02)
        until("q3 says it waits", lambda: "1 ahead" in _status(plane, "q3")[2], 10)
        status, secondary, message = _status(plane, "q2")
        assert (status, secondary) == ("InProgress", "Starting")
        assert message.startswith("Waiting for capacity: needs 8.0 GiB memory and 0.5 CPU")
        assert message.endswith("first in the queue")
        transitions = plane.describe("training", "q2")["SecondaryStatusTransitions"]
        assert transitions[-1]["StatusMessage"] == message
        # Both fit at once (which of the two starts first is theirs to race for).
        assert {s.labels["org.shipyard.job-name"] for s in runtime.started} == {"q0", "q1"}
        runtime.finish(runtime.started[0].name)
        until("q2 started", lambda: len(runtime.started) == 3, 10, poll=0.02)
        assert runtime.started[2].labels["org.shipyard.job-name"] == "q2"
        assert "StatusMessage" not in plane.describe("training", "q2")
        shown = snapshot(plane.ctx)
        assert (shown["Enabled"], shown["MemoryBytes"], shown["MemoryBytesHeld"]) == (
            True, 16 * GIB, 16 * GIB)
        assert [(w["Position"], w["Name"]) for w in shown["Waiting"]] == [(1, "q3")]
        # Stopping queued work is immediate: it never starts a container.
        plane.stop("training", "q3")
        record = plane.wait("training", "q3", timeout=10)
        assert record["TrainingJobStatus"] == "Stopped"
        assert "StatusMessage" not in record
        assert len(runtime.started) == 3
        for spec in runtime.started[1:]:
            runtime.finish(spec.name)
        for name in names[:3]:
            assert plane.wait("training", name, timeout=10)["TrainingJobStatus"] == "Completed"
        assert plane.ctx.capacity.entries() == []
    finally:
        plane.close()


def test_a_multi_host_job_waits_until_every_host_fits(tmp_path: Path) -> None:
    plane, runtime = fake_plane(tmp_path, lambda spec: FakeBehaviour(duration=None),
                                capacity_memory_mb=16 * 1024)
    try:
        plane.create("training", training_request("one", tmp_path))
        until("one running", lambda: len(runtime.started) == 1, 10, poll=0.02)
        plane.create("training", training_request("pair", tmp_path, instance_count=2))
        until("pair waits", lambda: "StatusMessage" in plane.describe("training", "pair"), 10)
        assert "needs 16.0 GiB memory and 1 CPU (2 x ml.m5.large)" in _status(plane, "pair")[2]
        runtime.finish(runtime.started[0].name)
        until("both hosts started", lambda: len(runtime.started) == 3, 10, poll=0.02)
        for spec in runtime.started[1:]:
            runtime.finish(spec.name)
        assert plane.wait("training", "pair", timeout=10)["TrainingJobStatus"] == "Completed"
    finally:
        plane.close()


def test_a_processing_job_queues_behind_a_training_job(tmp_path: Path) -> None:
    plane, runtime = fake_plane(tmp_path, lambda spec: FakeBehaviour(duration=None),
                                capacity_memory_mb=8 * 1024)
    try:
        plane.create("training", training_request("first", tmp_path))
        until("first running", lambda: len(runtime.started) == 1, 10, poll=0.02)
        plane.create("processing", {
            "ProcessingJobName": "second", "RoleArn": "arn:aws:iam::000000000000:role/x",
            "AppSpecification": {"ImageUri": runtime.started[0].image},
            "ProcessingResources": {"ClusterConfig": {
                "InstanceType": "ml.t3.medium", "InstanceCount": 1, "VolumeSizeInGB": 5}}})
        # The training job holds all 8 GiB (the fake runtime says nothing of CPUs).
        until("second waits", lambda: "StatusMessage" in plane.describe("processing",
                                                                        "second"), 10)
        message = plane.describe("processing", "second")["StatusMessage"]
        assert message.endswith("needs 4.0 GiB memory and 0.5 CPU (1 x ml.t3.medium); "
                                "0.0 GiB free; first in the queue")
        assert plane.describe("processing", "second")["ProcessingJobStatus"] == "InProgress"
        runtime.finish(runtime.started[0].name)
        until("second started", lambda: len(runtime.started) == 2, 10, poll=0.02)
        runtime.finish(runtime.started[1].name)
        record = plane.wait("processing", "second", timeout=10)
        assert record["ProcessingJobStatus"] == "Completed"
        assert "StatusMessage" not in record
    finally:
        plane.close()


def test_a_tuning_jobs_parallel_trials_are_bounded_by_capacity(tmp_path: Path) -> None:
    plane, runtime = fake_plane(tmp_path, lambda spec: FakeBehaviour(duration=None),
                                capacity_memory_mb=8 * 1024)  # one ml.m5.large
    try:
        definition = training_request("unused", tmp_path)
        del definition["TrainingJobName"]
        definition["AlgorithmSpecification"]["MetricDefinitions"] = [
            {"Name": "loss", "Regex": r"loss=([0-9.]+)"}]
        plane.create("tuning", {
            "HyperParameterTuningJobName": "tq",
            "HyperParameterTuningJobConfig": {
                "Strategy": "Random", "RandomSeed": 1,
                "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "loss"},
                "ResourceLimits": {"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 3},
                "ParameterRanges": {"IntegerParameterRanges": [
                    {"Name": "n", "MinValue": "1", "MaxValue": "100"}]}},
            "TrainingJobDefinition": definition})
        until("three trials", lambda: len(plane.tuning_trials("tq")) == 3, 10)

        def waiting() -> int:
            return sum("StatusMessage" in plane.describe("training", t["TrainingJobName"])
                       for t in plane.tuning_trials("tq"))

        until("two trials queued", lambda: waiting() == 2, 10)
        def running() -> int:
            states = [runtime.inspect(s.name) for s in runtime.started]
            return sum(1 for state in states if state is not None and state.running)

        def started(count: int) -> bool:
            return len(runtime.started) == count

        for index in range(3):
            until(f"trial {index + 1} running", partial(started, index + 1), 10, poll=0.02)
            assert running() == 1
            runtime.emit(runtime.started[index].name, "loss=1.0")
            runtime.finish(runtime.started[index].name)
        record = plane.wait("tuning", "tq", timeout=20)
        assert record["TrainingJobStatusCounters"]["Completed"] == 3
    finally:
        plane.close()


def _entry(seq: int, demand: Demand) -> Any:
    from shipyard.control.capacity import Entry

    return Entry(seq, "training", f"j{seq}", "", demand, None, True, 0.0)


def _ticket(*, ahead: int, used_cpus: float, used_memory: int) -> Any:
    from shipyard.control.capacity import Ticket

    return Ticket(False, ahead, LARGE, used_cpus, used_memory)
