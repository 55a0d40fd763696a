"""Job logs on disk (LogStore) and MetricDefinitions applied to them (MetricExtractor)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from shipyard.control.jobs.metrics import MetricExtractor, compile_metric_regex, final_metric_data
from shipyard.control.state.logs import FLUSH_SECONDS, LogEvent, LogStore, LogWriter
from shipyard.errors import ValidationError
from shipyard.runtimes.base import LogLine

# -- LogStore ----------------------------------------------------------------------------------


@pytest.fixture
def logs(tmp_path: Path) -> LogStore:
    return LogStore(tmp_path / "logs")


def _lines(*texts: str, start: int = 1_000) -> list[LogLine]:
    return [LogLine(start + i, text) for i, text in enumerate(texts)]


def test_append_then_read_everything(logs: LogStore) -> None:
    logs.append("training", "job-a", "algo-1", _lines("epoch 1", "epoch 2"))
    events, offset = logs.read("training", "job-a", "algo-1")
    assert events == [LogEvent("algo-1", 1000, "epoch 1"), LogEvent("algo-1", 1001, "epoch 2")]
    assert offset == logs.path("training", "job-a", "algo-1").stat().st_size
    assert events[0].timestamp_ms == 0
    assert LogEvent("h", 1_700_000_000_123_456_789, "").timestamp_ms == 1_700_000_000_123


def test_read_continues_from_offset(logs: LogStore) -> None:
    logs.append("training", "job-a", "algo-1", _lines("one", "two"))
    first, offset = logs.read("training", "job-a", "algo-1")
    logs.append("training", "job-a", "algo-1", _lines("three", start=2_000))
    more, offset2 = logs.read("training", "job-a", "algo-1", offset)
    assert [e.message for e in first] == ["one", "two"]
    assert more == [LogEvent("algo-1", 2000, "three")]
    assert logs.read("training", "job-a", "algo-1", offset2) == ([], offset2)


def test_read_leaves_a_partial_trailing_line_for_later(logs: LogStore) -> None:
    path = logs.path("training", "job-a", "algo-1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"5\tcomplete\n6\thalf a li")
    events, offset = logs.read("training", "job-a", "algo-1")
    assert events == [LogEvent("algo-1", 5, "complete")]
    assert offset == len(b"5\tcomplete\n")
    with open(path, "ab") as fh:
        fh.write(b"ne\n")
    rest, end = logs.read("training", "job-a", "algo-1", offset)
    assert rest == [LogEvent("algo-1", 6, "half a line")]
    assert end == path.stat().st_size


def test_read_of_missing_log_is_empty(logs: LogStore) -> None:
    assert logs.read("training", "nope", "algo-1") == ([], 0)
    assert logs.read("training", "nope", "algo-1", 17) == ([], 17)
    assert logs.tail_text("training", "nope", "algo-1") == []
    assert logs.last_timestamp_ns("training", "nope", "algo-1") == 0
    assert logs.hosts("training", "nope") == []


def test_embedded_newlines_stay_in_one_event(logs: LogStore) -> None:
    logs.append("training", "job-a", "algo-1", [LogLine(1, "two\nlines")])
    events, _ = logs.read("training", "job-a", "algo-1")
    assert [e.message for e in events] == ["two lines"]


def test_carriage_returns_do_not_split_or_break_events(logs: LogStore) -> None:
    # Progress bars (tqdm) redraw with \r inside one line of output.
    logs.append("training", "job-a", "algo-1",
                [LogLine(7, "progress  10%\rprogress  50%\rprogress 100%"), LogLine(8, "done\r")])
    events, _ = logs.read("training", "job-a", "algo-1")
    assert [(e.timestamp_ns, e.message) for e in events] == [
        (7, "progress  10%\rprogress  50%\rprogress 100%"), (8, "done\r")]
    assert logs.last_timestamp_ns("training", "job-a", "algo-1") == 8
    assert logs.tail_text("training", "job-a", "algo-1") == [
        "progress  10%\rprogress  50%\rprogress 100%", "done\r"]


def test_unicode_and_tabs_in_messages(logs: LogStore) -> None:
    logs.append("training", "job-a", "algo-1", [LogLine(1, "loss\t= 0.5 ✓ é")])
    events, _ = logs.read("training", "job-a", "algo-1")
    assert events == [LogEvent("algo-1", 1, "loss\t= 0.5 ✓ é")]


def _messages(logs: LogStore, host: str = "algo-2") -> list[str]:
    return [e.message for e in logs.read("training", "job-a", host)[0]]


def test_open_append_shows_lines_while_the_writer_is_open(logs: LogStore) -> None:
    with logs.open_append("training", "job-a", "algo-2") as writer:
        written = time.monotonic()
        writer.write(LogLine(10, "first"))
        # Readable before the writer closes, within a fraction of a second: log tailing
        # follows a running job.
        while _messages(logs) != ["first"]:
            assert time.monotonic() - written < 2, "the buffered line never reached the file"
            time.sleep(0.01)
        assert time.monotonic() - written < FLUSH_SECONDS + 0.5
        writer.write(LogLine(11, "second\nline"))
    # Closing writes whatever is still buffered.
    assert _messages(logs) == ["first", "second line"]


def _writer(logs: LogStore, **options: Any) -> tuple[LogWriter, Any]:
    path = logs.path("training", "job-a", "algo-2")
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "ab")  # noqa: SIM115 - closed by the test
    return LogWriter(fh, **options), fh


def test_writer_buffers_until_flushed_or_closed(logs: LogStore) -> None:
    writer, fh = _writer(logs, flush_seconds=3600)
    try:
        for i in range(1000):
            writer.write(LogLine(i + 1, f"line {i}"))
        # Nothing written line by line: the timer (an hour here) or a flush writes them.
        assert logs.path("training", "job-a", "algo-2").stat().st_size == 0
        writer.flush()
        assert _messages(logs) == [f"line {i}" for i in range(1000)]
        writer.write(LogLine(5000, "last"))
        writer.close()
        assert _messages(logs)[-1] == "last"
        assert logs.last_timestamp_ns("training", "job-a", "algo-2") == 5000
    finally:
        fh.close()


def test_writer_writes_a_full_buffer_at_once(logs: LogStore) -> None:
    writer, fh = _writer(logs, flush_seconds=3600, flush_chars=100)
    try:
        texts = [f"line {i} " + "y" * 10 for i in range(10)]
        for i, text in enumerate(texts):
            writer.write(LogLine(i + 1, text))  # 20 chars a record, 21 for the tenth
            if i == 3:
                assert _messages(logs) == []
        # The writes that bring the buffer to 100 chars (the 5th, the 10th) write it out.
        assert _messages(logs) == texts
        writer.write(LogLine(11, "waits"))
        assert len(_messages(logs)) == 10
        writer.close()
        assert len(_messages(logs)) == 11
    finally:
        fh.close()


def test_a_reader_never_sees_part_of_a_line(logs: LogStore) -> None:
    """Flushes by size and by timer race a reader: each read ends on a whole line."""
    writer, fh = _writer(logs, flush_seconds=0.001, flush_chars=4096)
    expected = [f"line {i} " + "x" * (i % 300) for i in range(20_000)]
    seen: list[str] = []
    offset = 0
    try:
        for i, text in enumerate(expected):
            writer.write(LogLine(i + 1, text))
            if i % 500 == 0:
                events, offset = logs.read("training", "job-a", "algo-2", offset)
                seen.extend(e.message for e in events)
        writer.close()
    finally:
        fh.close()
    events, offset = logs.read("training", "job-a", "algo-2", offset)
    seen.extend(e.message for e in events)
    assert seen == expected
    assert offset == logs.path("training", "job-a", "algo-2").stat().st_size


def test_last_timestamp_ns_resumes_after_the_last_complete_line(logs: LogStore) -> None:
    logs.append("training", "job-a", "algo-1", _lines(*[f"line {i}" for i in range(5000)]))
    assert logs.last_timestamp_ns("training", "job-a", "algo-1") == 1_000 + 4999
    with open(logs.path("training", "job-a", "algo-1"), "ab") as fh:
        fh.write(b"no timestamp here\n")
    assert logs.last_timestamp_ns("training", "job-a", "algo-1") == 5999


def test_an_unfinished_last_line_is_fetched_again_not_glued(logs: LogStore) -> None:
    """A follower killed mid-write leaves half a line; the next one resumes before it."""
    logs.append("training", "job-a", "algo-2", _lines("one", "two"))
    with open(logs.path("training", "job-a", "algo-2"), "ab") as fh:
        fh.write(b"1002\tthr")
    assert logs.last_timestamp_ns("training", "job-a", "algo-2") == 1001
    with logs.open_append("training", "job-a", "algo-2") as writer:
        writer.write(LogLine(1002, "three"))
    assert _messages(logs) == ["one", "two", "three"]


def test_tail_text_and_hosts(logs: LogStore) -> None:
    logs.append("training", "job-a", "algo-2", _lines(*[f"l{i}" for i in range(30)]))
    logs.append("training", "job-a", "algo-1", _lines("x"))
    logs.append("training", "job-a", "algo-3", [])  # nothing to write: no file
    logs.append("processing", "job-a", "algo-9", _lines("other kind"))
    assert logs.tail_text("training", "job-a", "algo-2") == [f"l{i}" for i in range(10, 30)]
    assert logs.tail_text("training", "job-a", "algo-2", lines=3) == ["l27", "l28", "l29"]
    assert logs.hosts("training", "job-a") == ["algo-1", "algo-2"]
    assert logs.hosts("processing", "job-a") == ["algo-9"]


def test_a_malformed_line_does_not_break_reading(logs: LogStore) -> None:
    path = logs.path("training", "job-a", "algo-1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"1\tok\ngarbage without a stamp\n2\tstill ok\n")
    events, _ = logs.read("training", "job-a", "algo-1")
    assert events == [
        LogEvent("algo-1", 1, "ok"),
        # Kept whole, stamped like the line before it so the order holds.
        LogEvent("algo-1", 1, "garbage without a stamp"),
        LogEvent("algo-1", 2, "still ok"),
    ]


def test_last_timestamp_ignores_a_line_cut_by_the_tail_window(logs: LogStore) -> None:
    # One line longer than the window ends the file: the window starts inside a timestamp.
    path = logs.path("training", "job-a", "algo-1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"1\tshort\n" + b"9876543210\t" + b"x" * 65529 + b"\n")
    assert path.stat().st_size - 65536 == len(b"1\tshort\n") + 5  # cut after "98765"
    assert logs.last_timestamp_ns("training", "job-a", "algo-1") == 9876543210


# -- MetricExtractor ---------------------------------------------------------------------------


def _extract(definitions: list[dict[str, Any]], *texts: str) -> list[tuple[str, float, float]]:
    return MetricExtractor(definitions).extract(
        [LogLine(i * 1_000_000_000, t) for i, t in enumerate(texts, start=1)])


def test_first_group_is_the_value() -> None:
    definitions = [{"Name": "train:loss", "Regex": r"loss=([0-9.eE+-]+)"},
                   {"Name": "epoch", "Regex": r"epoch (\d+)"}]
    assert _extract(definitions, "epoch 1 loss=0.75", "nothing here", "epoch 2 loss=1e-3") == [
        ("train:loss", 1.0, 0.75), ("epoch", 1.0, 1.0),
        ("train:loss", 3.0, 0.001), ("epoch", 3.0, 2.0),
    ]


def test_whole_match_without_a_group() -> None:
    assert _extract([{"Name": "n", "Regex": r"-?\d+\.\d+"}], "value -2.5 seen") == [
        ("n", 1.0, -2.5)]


def test_first_match_per_line_only() -> None:
    assert _extract([{"Name": "acc", "Regex": r"acc=(\S+)"}], "acc=0.1 acc=0.9") == [
        ("acc", 1.0, 0.1)]


@pytest.mark.parametrize("text", ["loss=abc", "loss=inf", "loss=nan", "loss=-inf", "loss="])
def test_non_numeric_and_non_finite_values_are_skipped(text: str) -> None:
    assert _extract([{"Name": "loss", "Regex": r"loss=(\S*)"}], text) == []


def test_optional_group_that_did_not_take_part_is_skipped() -> None:
    assert _extract([{"Name": "x", "Regex": r"x(?:=(\d+))?"}], "x") == []


def test_no_definitions_extract_nothing() -> None:
    assert MetricExtractor([]).extract([LogLine(1, "loss=1")]) == []


@pytest.mark.parametrize(
    "definition",
    [
        {"Name": "bad", "Regex": "loss=(["},
        {"Name": "", "Regex": "x"},
        {"Name": "n" * 256, "Regex": "x"},
        {"Name": "n", "Regex": ""},
        {"Name": "n", "Regex": "x" * 501},
        {"Name": 5, "Regex": "x"},
        {"Regex": "x"},
        {"Name": "n"},
        ["Name", "Regex"],
    ],
    ids=["bad-regex", "empty-name", "long-name", "empty-regex", "long-regex", "non-string-name",
         "no-name", "no-regex",
         "not-an-object"],
)
def test_bad_definitions_are_validation_errors(definition: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="MetricDefinitions"):
        MetricExtractor([definition])
    with pytest.raises(ValidationError):
        compile_metric_regex(definition)


def test_final_metric_data_keeps_the_last_value_per_metric() -> None:
    series = [
        ("loss", 1.0, 0.9, "algo-1"),
        ("acc", 1.5, 0.5, "algo-1"),
        ("loss", 2.0, 0.5, "algo-2"),
        ("loss", 3.0, 0.25, "algo-1"),
    ]
    assert final_metric_data(series) == [
        {"MetricName": "acc", "Value": 0.5, "Timestamp": 1.5},
        {"MetricName": "loss", "Value": 0.25, "Timestamp": 3.0},
    ]
    assert final_metric_data([]) == []
    assert all(math.isfinite(d["Value"]) for d in final_metric_data(series))
