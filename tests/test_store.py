"""The SQLite state store: rows, atomic read-modify-write, listing, metrics, error translation."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.control.state.locks import JobLock
from shipyard.control.state.store import JobRow, Store
from shipyard.errors import ResourceInUse, ResourceNotFound, StorageError

ARN = "arn:aws:sagemaker:us-east-1:000000000000:training-job/{}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state" / "shipyard.db")
    yield s
    s.close()


def _insert(store: Store, name: str, status: str = "InProgress", created: float = 1000.0,
            kind: str = "training", **record: Any) -> None:
    store.insert_job(kind, name, ARN.format(name), status,
                     {"TrainingJobName": name, "CreationTime": created, **record},
                     {"phase": "new"})


def test_insert_and_get(store: Store) -> None:
    _insert(store, "job-a", Extra={"nested": [1, 2]})
    row = store.get_job("training", "job-a")
    assert row == JobRow(
        kind="training", name="job-a", arn=ARN.format("job-a"), status="InProgress",
        record={"TrainingJobName": "job-a", "CreationTime": 1000.0,
                "Extra": {"nested": [1, 2]}},
        runner={"phase": "new"}, stop_requested=False,
    )


def test_duplicate_name_is_resource_in_use(store: Store) -> None:
    _insert(store, "job-a")
    with pytest.raises(ResourceInUse):
        _insert(store, "job-a", status="Completed")
    assert store.get_job("training", "job-a").status == "InProgress"
    # Names are unique per kind, not across kinds.
    _insert(store, "job-a", kind="processing")
    assert store.get_job("processing", "job-a").kind == "processing"


def test_missing_job_is_resource_not_found(store: Store) -> None:
    with pytest.raises(ResourceNotFound):
        store.get_job("training", "nope")
    with pytest.raises(ResourceNotFound):
        store.mutate("training", "nope", lambda record, runner: None)


def test_mutate_changes_record_runner_and_status(store: Store) -> None:
    _insert(store, "job-a")

    def change(record: dict[str, Any], runner: dict[str, Any]) -> str | None:
        record["SecondaryStatus"] = "Training"
        runner["phase"] = "running"
        return "Stopping"

    row = store.mutate("training", "job-a", change)
    assert row.status == "Stopping"
    again = store.get_job("training", "job-a")
    assert again.status == "Stopping"
    assert again.record["SecondaryStatus"] == "Training"
    assert again.runner == {"phase": "running"}
    # None keeps the status.
    assert store.mutate("training", "job-a", lambda r, n: None).status == "Stopping"


def test_mutate_that_raises_changes_nothing(store: Store) -> None:
    _insert(store, "job-a")

    def broken(record: dict[str, Any], runner: dict[str, Any]) -> str | None:
        record["Half"] = "written"
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.mutate("training", "job-a", broken)
    assert "Half" not in store.get_job("training", "job-a").record
    # The connection is usable afterwards (the transaction was rolled back, not left open).
    store.mutate("training", "job-a", lambda r, n: "Completed")
    assert store.get_job("training", "job-a").status == "Completed"


def _bump(record: dict[str, Any], runner: dict[str, Any]) -> str | None:
    record["Counter"] = record.get("Counter", 0) + 1
    return None


def test_mutate_is_atomic_across_threads(store: Store) -> None:
    _insert(store, "job-a")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                store.mutate("training", "job-a", _bump)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.get_job("training", "job-a").record["Counter"] == 400


_BUMP_IN_ANOTHER_PROCESS = """
import sys
from pathlib import Path
from shipyard.control.state.store import Store

def bump(record, runner):
    record["Counter"] = record.get("Counter", 0) + 1

store = Store(Path(sys.argv[1]))
for _ in range(50):
    store.mutate("training", "job-a", bump)
store.close()
"""


def test_mutate_is_atomic_across_processes(store: Store) -> None:
    _insert(store, "job-a")
    children = [
        subprocess.Popen([sys.executable, "-c", _BUMP_IN_ANOTHER_PROCESS, str(store.path)],
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for _ in range(50):  # and this process at the same time
        store.mutate("training", "job-a", _bump)
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    assert store.get_job("training", "job-a").record["Counter"] == 150


def test_stop_request_flag(store: Store) -> None:
    _insert(store, "job-a")
    assert store.stop_requested("training", "job-a") is False
    store.request_stop("training", "job-a")
    assert store.stop_requested("training", "job-a") is True
    assert store.get_job("training", "job-a").stop_requested is True
    assert store.stop_requested("training", "nope") is False


@pytest.fixture
def listing(store: Store) -> Store:
    for name, status, created in [
        ("alpha", "Completed", 100.0),
        ("bravo-x", "InProgress", 300.0),
        ("charlie", "Failed", 200.0),
        ("delta-x", "Completed", 400.0),
        ("echo", "Stopped", 500.0),
    ]:
        _insert(store, name, status=status, created=created)
    _insert(store, "other-kind-x", kind="processing", created=250.0)
    return store


def _names(rows: list[JobRow]) -> list[str]:
    return [r.name for r in rows]


def test_list_defaults_newest_first_and_one_kind(listing: Store) -> None:
    assert _names(listing.list_jobs("training")) == [
        "echo", "delta-x", "bravo-x", "charlie", "alpha"]
    assert _names(listing.list_jobs("processing")) == ["other-kind-x"]
    assert listing.list_jobs("transform") == []


@pytest.mark.parametrize(
    ("sort_by", "descending", "expected"),
    [
        ("CreationTime", False, ["alpha", "charlie", "bravo-x", "delta-x", "echo"]),
        ("CreationTime", True, ["echo", "delta-x", "bravo-x", "charlie", "alpha"]),
        ("Name", False, ["alpha", "bravo-x", "charlie", "delta-x", "echo"]),
        ("Name", True, ["echo", "delta-x", "charlie", "bravo-x", "alpha"]),
        # Ties within a status are broken by name in the same direction.
        ("Status", False, ["alpha", "delta-x", "charlie", "bravo-x", "echo"]),
        ("Status", True, ["echo", "bravo-x", "charlie", "delta-x", "alpha"]),
    ],
)
def test_list_sorting(listing: Store, sort_by: str, descending: bool,
                      expected: list[str]) -> None:
    assert _names(listing.list_jobs("training", sort_by=sort_by,
                                    descending=descending)) == expected


def test_list_filters(listing: Store) -> None:
    asc: dict[str, Any] = {"descending": False}
    assert _names(listing.list_jobs("training", statuses=("Completed",), **asc)) == [
        "alpha", "delta-x"]
    assert _names(listing.list_jobs("training", statuses=("Failed", "Stopped"), **asc)) == [
        "charlie", "echo"]
    assert _names(listing.list_jobs("training", name_contains="-x", **asc)) == [
        "bravo-x", "delta-x"]
    assert listing.list_jobs("training", name_contains="zzz") == []
    # CreationTimeAfter / Before are strict bounds.
    assert _names(listing.list_jobs("training", created_after=200.0, **asc)) == [
        "bravo-x", "delta-x", "echo"]
    assert _names(listing.list_jobs("training", created_before=300.0, **asc)) == [
        "alpha", "charlie"]
    assert _names(listing.list_jobs("training", created_after=100.0, created_before=400.0,
                                    statuses=("InProgress", "Failed"), **asc)) == [
        "charlie", "bravo-x"]


def test_list_filters_on_last_modified(store: Store) -> None:
    _insert(store, "old", created=100.0, LastModifiedTime=100.0)
    _insert(store, "new", created=100.0)
    store.mutate("training", "new",
                 lambda record, runner: record.update(LastModifiedTime=900.0))
    assert _names(store.list_jobs("training", modified_after=500.0)) == ["new"]
    assert _names(store.list_jobs("training", modified_before=500.0)) == ["old"]


def test_list_pagination(listing: Store) -> None:
    asc: dict[str, Any] = {"sort_by": "Name", "descending": False}
    pages = [_names(listing.list_jobs("training", limit=2, offset=o, **asc)) for o in (0, 2, 4)]
    assert pages == [["alpha", "bravo-x"], ["charlie", "delta-x"], ["echo"]]
    assert listing.list_jobs("training", limit=2, offset=6, **asc) == []
    # An offset without a limit still skips.
    assert _names(listing.list_jobs("training", offset=3, **asc)) == ["delta-x", "echo"]


def test_metrics_series_in_time_order(store: Store) -> None:
    store.add_metrics("training", "job-a", "algo-1", [("loss", 2.0, 0.5), ("acc", 1.0, 0.7)])
    store.add_metrics("training", "job-a", "algo-2", [("loss", 1.0, 0.9), ("loss", 2.0, 0.4)])
    store.add_metrics("training", "job-a", "algo-1", [])
    store.add_metrics("training", "job-b", "algo-1", [("loss", 0.5, 9.0)])
    assert store.metric_series("training", "job-a", "loss") == [
        ("loss", 1.0, 0.9, "algo-2"),
        # Same timestamp: insertion order.
        ("loss", 2.0, 0.5, "algo-1"),
        ("loss", 2.0, 0.4, "algo-2"),
    ]
    assert [p[0] for p in store.metric_series("training", "job-a")] == [
        "acc", "loss", "loss", "loss"]
    assert store.metric_series("training", "missing") == []


def test_store_reopens_existing_state(tmp_path: Path) -> None:
    first = Store(tmp_path / "db.sqlite")
    _insert(first, "job-a")
    first.close()
    second = Store(tmp_path / "db.sqlite")
    assert second.get_job("training", "job-a").name == "job-a"
    second.close()


def test_parent_that_is_a_file_is_storage_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("not a folder")
    with pytest.raises(StorageError):
        Store(tmp_path / "blocker" / "state.db")


def test_database_that_is_a_folder_is_storage_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()
    with pytest.raises(StorageError):
        Store(tmp_path / "state.db")


def test_corrupt_database_is_storage_error(tmp_path: Path) -> None:
    (tmp_path / "state.db").write_bytes(b"this is not sqlite, " * 100)
    with pytest.raises(StorageError, match="state database error"):
        Store(tmp_path / "state.db")


def test_database_broken_under_a_thread_is_storage_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    _insert(store, "job-a")
    store.close()
    (tmp_path / "state.db").write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"state.db{suffix}").unlink(missing_ok=True)
    caught: list[BaseException] = []

    def work() -> None:
        # A new thread opens its own connection: that open must be translated as well.
        try:
            store.mutate("training", "job-a", _bump)
        except BaseException as exc:
            caught.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert len(caught) == 1 and isinstance(caught[0], StorageError), caught


# -- JobLock: one supervisor per job -----------------------------------------------------------

_HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_job_lock_is_exclusive_within_a_process(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "training-job-a.lock"
    first, second = JobLock(path), JobLock(path)
    assert first.acquire() is True
    assert path.exists()
    assert second.acquire() is False
    assert second.is_held_elsewhere() is True
    assert first.is_held_elsewhere() is False  # its own holder is not "elsewhere"
    first.release()
    assert second.is_held_elsewhere() is False
    assert second.acquire() is True
    assert first.acquire() is False
    second.release()
    second.release()  # releasing twice is harmless
    assert first.acquire() is True
    first.release()


def test_job_lock_held_by_another_process_until_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "training-job-a.lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        lock = JobLock(path)
        assert lock.is_held_elsewhere() is True
        assert lock.acquire() is False
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # the holder exits; the kernel drops its lock
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    assert lock.is_held_elsewhere() is False
    assert lock.acquire() is True
    lock.release()


def test_job_lock_is_not_inherited_by_child_processes(tmp_path: Path) -> None:
    # Containers and shims started by a supervisor must not keep its lock alive.
    path = tmp_path / "training-job-a.lock"
    lock = JobLock(path)
    assert lock.acquire()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE, close_fds=False)
    try:
        lock.release()
        assert JobLock(path).is_held_elsewhere() is False
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
