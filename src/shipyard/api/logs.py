"""CloudWatch Logs, read side, over the job logs the control plane keeps.

What SDK v2 and the AWS CLI read (platform-api.md 3.12, 4.3):

- Log groups ``/aws/sagemaker/TrainingJobs``, ``/aws/sagemaker/ProcessingJobs`` and
  ``/aws/sagemaker/TransformJobs``; streams ``<job>/algo-<N>-<epoch>`` where ``epoch`` is the
  integer second the job started (``TrainingStartTime``/``ProcessingStartTime``/
  ``TransformStartTime``, else ``CreationTime``), so a stream's name never changes. One group
  per endpoint, ``/aws/sagemaker/Endpoints/<name>``, with streams ``<variant>/<instance id>``.
  A stream exists once its host's log file does (``LogStore.hosts``).
- ``DescribeLogStreams``: SDK v2 re-issues the call *without* the token while ``nextToken`` is
  present, so the last page never carries one (it would spin forever).
- ``GetLogEvents``: SDK v2 follows ``nextForwardToken`` until a page has **no events**; once
  caught up the page is empty and the forward token is the one it was given. Events with the
  same timestamp keep file order (the SDK resumes with ``startTime`` = last timestamp and a
  count of events already seen at it).
- Tokens: ``f/<56 digits>`` / ``b/<56 digits>`` like AWS's; the digits are the byte offset of a
  line boundary in the host's log file, so reading resumes exactly where it stopped.
- Pages stop at ``limit`` events or at 1 MB of messages (26 bytes of overhead per event, as
  CloudWatch counts them), whichever comes first, but always hold at least one event.

Shipyard stores no separate ingestion time: ``ingestionTime`` is the event's timestamp.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from shipyard import kinds
from shipyard.control import ControlPlane
from shipyard.control.state.log_reader import Forward, HostLog, Line
from shipyard.errors import InvalidParameter, LogsResourceNotFound

__all__ = ["GROUPS", "HANDLERS", "describe_log_streams", "filter_log_events", "get_log_events"]

Handler = Callable[[ControlPlane, dict[str, Any]], dict[str, Any]]

#: Log group -> job kind.
GROUPS = {k.log_group: k.key for k in kinds.JOBS if k.log_group}
#: One log group per endpoint (``/aws/sagemaker/Endpoints/<name>``), streams named
#: ``<variant>/<instance id>`` as on AWS.
ENDPOINT_GROUP_PREFIX = kinds.ENDPOINT_LOG_GROUP_PREFIX

MAX_RESPONSE_BYTES = 1_048_576
#: What CloudWatch adds to each event's message when it sizes a batch.
EVENT_OVERHEAD_BYTES = 26
#: FilterLogEvents holds a chunk per stream at once: smaller ones bound its memory.
_FILTER_CHUNK = 8 * 1024
_JOB_PAGE = 200
_EVENT_TOKEN = re.compile(r"([fb])/(\d{1,56})")

_NO_GROUP = "The specified log group does not exist."
_NO_STREAM = "The specified log stream does not exist."
_BAD_TOKEN = "The specified nextToken is invalid."


# -- streams --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stream:
    kind: str
    job: str
    host: str
    start_ms: int
    log: HostLog

    @property
    def name(self) -> str:
        if self.kind == "endpoint":
            return self.host
        return f"{self.job}/{self.host}-{self.start_ms // 1000}"


@dataclass(frozen=True)
class Group:
    name: str
    kind: str
    #: The one job whose streams the group holds (an endpoint's group), or None (all jobs).
    job: str | None = None


def _start_ms(kind: str, record: dict[str, Any]) -> int:
    value = record.get(kinds.get(kind).start_field) or record.get("CreationTime") or 0
    return int(float(value) * 1000)


def _name(kind: str, record: dict[str, Any]) -> str:
    return str(record[kinds.get(kind).name_field])


def _job_streams(plane: ControlPlane, kind: str, record: dict[str, Any]) -> list[Stream]:
    start, name = _start_ms(kind, record), _name(kind, record)
    return [Stream(kind, name, log.host, start, log) for log in plane.host_logs(kind, name)]


def _group(params: dict[str, Any]) -> Group:
    """The log group named by ``logGroupName`` or ``logGroupIdentifier`` (name or ARN)."""
    name, ident = params.get("logGroupName"), params.get("logGroupIdentifier")
    if name and ident:
        raise InvalidParameter("LogGroup name and LogGroup ARN are mutually exclusive "
                               "parameters.")
    if ident:
        # arn:aws:logs:<region>:<account>:log-group:<name>[:*]
        name = ident.split(":", 6)[6] if ident.startswith("arn:") and ident.count(":") >= 6 \
            else ident
        name = name.removesuffix(":*")
    if not name:
        raise InvalidParameter("Either logGroupName or logGroupIdentifier must be specified.")
    name = str(name)
    if name.startswith(ENDPOINT_GROUP_PREFIX) and len(name) > len(ENDPOINT_GROUP_PREFIX):
        return Group(name, "endpoint", name[len(ENDPOINT_GROUP_PREFIX):])
    kind = GROUPS.get(name)
    if kind is None:
        raise LogsResourceNotFound(_NO_GROUP)
    return Group(name, kind)


def _resolve(plane: ControlPlane, group: Group, name: str) -> Stream | None:
    kind = group.kind
    if group.job is not None:
        job, host = group.job, name
    else:
        job, slash, rest = name.partition("/")
        host, dash, epoch = rest.rpartition("-")
        if not (slash and dash and epoch.isdigit()):
            return None
    record = plane.lookup(kind, job)
    log = plane.host_log(kind, job, host) if record is not None else None
    if record is None or log is None:
        return None
    stream = Stream(kind, job, host, _start_ms(kind, record), log)
    return stream if stream.name == name else None


def _jobs_by_name(plane: ControlPlane, group: Group, prefix: str, descending: bool,
                  start: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """(position, job) in name order, for jobs whose streams can match ``prefix``."""
    kind = group.kind
    if group.job is not None:
        if start == 0:
            yield 0, _group_jobs(plane, group)[0]
        return
    if "/" in prefix:
        # "<job>/...": exactly one job can match; the SDK always asks this way.
        record = plane.lookup(kind, prefix.split("/", 1)[0]) if start == 0 else None
        if record is not None:
            yield 0, record
        return
    offset = start
    while True:
        rows = plane.list_resources(kind, name_contains=prefix or None, sort_by="Name",
                                    descending=descending, offset=offset, limit=_JOB_PAGE)
        for i, row in enumerate(rows):
            if _name(kind, row).startswith(prefix):
                yield offset + i, row
        if len(rows) < _JOB_PAGE:
            return
        offset += len(rows)


# -- pages of lines -------------------------------------------------------------------------
def _size(line: Line) -> int:
    return line.size + EVENT_OVERHEAD_BYTES


def _in_range(start: int | None, end: int | None) -> Callable[[Line], bool]:
    # startTime is inclusive, endTime exclusive (GetLogEvents/FilterLogEvents reference).
    lo = start if start is not None else -1
    hi = end if end is not None else 1 << 62
    return lambda line: lo <= line.timestamp_ms < hi


def _take(lines: Iterable[Line], keep: Callable[[Line], bool], limit: int
          ) -> tuple[list[Line], bool]:
    """Up to ``limit`` kept lines within the 1 MB budget; True if the page filled up."""
    taken: list[Line] = []
    size = 0
    for line in lines:
        if not keep(line):
            continue
        if len(taken) >= limit or (taken and size + _size(line) > MAX_RESPONSE_BYTES):
            return taken, True
        taken.append(line)
        size += _size(line)
    return taken, False


# -- parameters -----------------------------------------------------------------------------
def _limit(params: dict[str, Any], default: int, maximum: int) -> int:
    value = params.get("limit")
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidParameter(f"1 validation error detected: Value '{value}' at 'limit' "
                               "failed to satisfy constraint: Member must have value greater "
                               "than or equal to 1")
    if value > maximum:
        raise InvalidParameter(f"1 validation error detected: Value '{value}' at 'limit' "
                               "failed to satisfy constraint: Member must have value less than "
                               f"or equal to {maximum}")
    return value


def _time(params: dict[str, Any], key: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidParameter(f"1 validation error detected: Value '{value}' at '{key}' "
                               "failed to satisfy constraint: Member must have value greater "
                               "than or equal to 0")
    return value


def _encode(data: dict[str, Any], scope: dict[str, Any]) -> str:
    """An opaque token bound to the request it continues (another request refuses it)."""
    fingerprint = hashlib.sha256(json.dumps(scope, sort_keys=True).encode()).hexdigest()[:12]
    raw = json.dumps({**data, "_": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")


def _decode(token: str, scope: dict[str, Any]) -> dict[str, Any]:
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        data = json.loads(raw)
        fingerprint = data.pop("_")
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        raise InvalidParameter(_BAD_TOKEN) from exc
    expected = hashlib.sha256(json.dumps(scope, sort_keys=True).encode()).hexdigest()[:12]
    if fingerprint != expected or not isinstance(data, dict):
        raise InvalidParameter(_BAD_TOKEN)
    return data


def _offset(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidParameter(_BAD_TOKEN)
    return value


# -- DescribeLogStreams ---------------------------------------------------------------------
def describe_log_streams(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    """Streams of a group; by name (paging through the store) or by time of last event."""
    group = _group(params)
    prefix = params.get("logStreamNamePrefix") or ""
    order = params.get("orderBy") or "LogStreamName"
    if order not in ("LogStreamName", "LastEventTime"):
        raise InvalidParameter(f"1 validation error detected: Value '{order}' at 'orderBy' "
                               "failed to satisfy constraint: Member must satisfy enum value "
                               "set: [LogStreamName, LastEventTime]")
    if order == "LastEventTime" and prefix:
        raise InvalidParameter("Cannot order by LastEventTime with a logStreamNamePrefix.")
    descending = bool(params.get("descending"))
    limit = _limit(params, 50, 50)
    scope = {"op": "streams", "group": group.name, "prefix": prefix, "order": order,
             "descending": descending}
    cursor = _decode(params["nextToken"], scope) if params.get("nextToken") else {}
    position, skip = _offset(cursor.get("p", 0)), _offset(cursor.get("s", 0))
    if order == "LogStreamName":
        streams, after = _page_by_name(plane, group, prefix, descending, limit, position, skip)
    else:
        streams, after = _page_by_event_time(plane, group, descending, limit, position)
    result: dict[str, Any] = {"logStreams": [_describe_stream(plane, group.name, s)
                                             for s in streams]}
    if after is not None:
        result["nextToken"] = _encode({"p": after[0], "s": after[1]}, scope)
    return result


def _page_by_name(plane: ControlPlane, group: Group, prefix: str, descending: bool, limit: int,
                  position: int, skip: int) -> tuple[list[Stream], tuple[int, int] | None]:
    """One page in name order, and where the next starts (None: this is the last page).

    Jobs come from the store in name order; within a job, streams in name order. That is
    CloudWatch's order except where one job's name followed by ``-`` begins another's.
    """
    page: list[Stream] = []
    for index, row in _jobs_by_name(plane, group, prefix, descending, position):
        streams = sorted((s for s in _job_streams(plane, group.kind, row)
                          if s.name.startswith(prefix)),
                         key=lambda s: s.name, reverse=descending)
        already = skip if index == position else 0
        streams = streams[already:]
        if not streams:
            continue
        if len(page) == limit:
            # Looked ahead: another stream exists, so this page is not the last.
            return page, (index, already)
        room = limit - len(page)
        page.extend(streams[:room])
        if len(streams) > room:
            return page, (index, already + room)
    return page, None


def _page_by_event_time(plane: ControlPlane, group: Group, descending: bool, limit: int,
                        position: int) -> tuple[list[Stream], tuple[int, int] | None]:
    # Ordered by when each stream last stored an event (its file's mtime): a stat per
    # stream, no log file is read until the page is described.
    keyed = []
    for row in _group_jobs(plane, group):
        for stream in _job_streams(plane, group.kind, row):
            modified = stream.log.modified_ns()
            if modified is not None:
                keyed.append((modified, stream.name, stream))
    keyed.sort(key=lambda item: (item[0], item[1]), reverse=descending)
    page = [stream for _, _, stream in keyed[position:position + limit]]
    more = position + limit < len(keyed)
    return page, ((position + limit, 0) if more else None)


def _group_jobs(plane: ControlPlane, group: Group, created_before: float | None = None
                ) -> list[dict[str, Any]]:
    if group.job is None:
        return plane.list_resources(group.kind, created_before=created_before)
    record = plane.lookup(group.kind, group.job)
    if record is None:
        # An endpoint's group exists while the endpoint does.
        raise LogsResourceNotFound(_NO_GROUP)
    return [record]


def _describe_stream(plane: ControlPlane, group: str, stream: Stream) -> dict[str, Any]:
    settings = plane.settings
    described: dict[str, Any] = {
        "logStreamName": stream.name,
        "creationTime": stream.start_ms,
        "arn": (f"arn:aws:logs:{settings.region}:{settings.account_id}:log-group:{group}"
                f":log-stream:{stream.name}"),
        # Deprecated by CloudWatch, which now always reports 0.
        "storedBytes": 0,
    }
    end = stream.log.end()
    first = next(iter(stream.log.forward(0)), None) if end else None
    last = next(stream.log.backward(end), None) if end else None
    modified = stream.log.modified_ns()
    if first is not None and last is not None and modified is not None:
        described["firstEventTimestamp"] = first.timestamp_ms
        described["lastEventTimestamp"] = last.timestamp_ms
        described["lastIngestionTime"] = modified // 1_000_000
    return described


# -- GetLogEvents ---------------------------------------------------------------------------
def get_log_events(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    """One page of a stream, forward or backward from a token, the head or the tail."""
    group = _group(params)
    name = params.get("logStreamName")
    stream = _resolve(plane, group, str(name)) if name else None
    if stream is None:
        raise LogsResourceNotFound(_NO_STREAM)
    limit = _limit(params, 10_000, 10_000)
    keep = _in_range(_time(params, "startTime"), _time(params, "endTime"))
    end = stream.log.end()
    token = params.get("nextToken")
    if token:
        match = _EVENT_TOKEN.fullmatch(str(token))
        if match is None:
            raise InvalidParameter(_BAD_TOKEN)
        direction, offset = match.group(1), int(match.group(2))
        if not stream.log.at_boundary(offset, end):
            raise InvalidParameter(_BAD_TOKEN)
    elif params.get("startFromHead"):
        direction, offset = "f", 0
    else:
        # CloudWatch's default: the newest events.
        direction, offset = "b", end

    if direction == "f":
        reader = stream.log.forward(offset)
        lines, full = _take(reader, keep, limit)
        # Full: resume after the last event given; else after everything scanned (when
        # nothing new was there, that is the token we were given: the SDK's stop signal).
        forward = lines[-1].end if full else max(reader.pos, offset)
        backward = offset
    else:
        lines, full = _take(stream.log.backward(offset), keep, limit)
        lines.reverse()
        forward = offset
        backward = lines[0].start if full else 0
    return {
        "events": [{"timestamp": line.timestamp_ms, "message": line.message,
                    "ingestionTime": line.timestamp_ms} for line in lines],
        "nextForwardToken": f"f/{forward:056d}",
        "nextBackwardToken": f"b/{backward:056d}",
    }


# -- FilterLogEvents ------------------------------------------------------------------------
def _pattern(text: str) -> Callable[[str], bool]:
    """CloudWatch's term patterns: ``a b`` (all), ``"a phrase"``, ``?a ?b`` (any), ``-a`` (not).

    Matching is case-sensitive, as CloudWatch's. JSON (``{...}``), space-delimited
    (``[...]``) and regex (``%...%``) patterns are refused rather than matched wrongly.
    """
    text = text.strip()
    if not text:
        return lambda message: True
    if text[0] in "{[%":
        raise InvalidParameter("Shipyard supports term and quoted-phrase filter patterns only "
                               f"(with ? and - prefixes), not '{text[:40]}'")
    required: list[str] = []
    any_of: list[str] = []
    excluded: list[str] = []
    position = 0
    for match in re.finditer(r'\s*([?-]?)(?:"((?:[^"\\]|\\.)*)"|([^\s"]+))', text):
        if match.start() != position:
            break
        position = match.end()
        sign, quoted, bare = match.groups()
        term = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        {"?": any_of, "-": excluded}.get(sign, required).append(term)
    if text[position:].strip():
        raise InvalidParameter(f"Invalid filter pattern: unbalanced quote in '{text}'")

    def matches(message: str) -> bool:
        return (all(t in message for t in required)
                and (not any_of or any(t in message for t in any_of))
                and not any(t in message for t in excluded))

    return matches


def _filter_streams(plane: ControlPlane, group: Group, params: dict[str, Any],
                    end: int | None) -> list[Stream]:
    names = params.get("logStreamNames")
    prefix = params.get("logStreamNamePrefix")
    if names and prefix:
        raise InvalidParameter("logStreamNames and logStreamNamePrefix cannot both be "
                               "specified.")
    if names and len(names) > 100:
        raise InvalidParameter("1 validation error detected: Value at 'logStreamNames' failed "
                               "to satisfy constraint: Member must have length less than or "
                               "equal to 100")
    if names:
        # Names that match no stream contribute no events, as in CloudWatch.
        found = {s.name: s for s in (_resolve(plane, group, str(n)) for n in names) if s}
        return sorted(found.values(), key=lambda s: s.name)
    if prefix:
        rows: Iterable[dict[str, Any]] = (
            row for _, row in _jobs_by_name(plane, group, prefix, False, 0))
    else:
        # A job created after endTime cannot have logged before it (a minute of slack for
        # an engine whose clock drifts from ours).
        rows = _group_jobs(plane, group, None if end is None else end / 1000 + 60)
    streams = [s for row in rows for s in _job_streams(plane, group.kind, row)
               if not prefix or s.name.startswith(prefix)]
    return sorted(streams, key=lambda s: s.name)


def filter_log_events(plane: ControlPlane, params: dict[str, Any]) -> dict[str, Any]:
    """Matching events of many streams, interleaved by timestamp (ties: stream name, file)."""
    group = _group(params)
    limit = _limit(params, 10_000, 10_000)
    start, end = _time(params, "startTime"), _time(params, "endTime")
    in_range = _in_range(start, end)
    matches = _pattern(str(params.get("filterPattern") or ""))
    streams = _filter_streams(plane, group, params, end)
    scope = {"op": "filter", "group": group.name, "names": params.get("logStreamNames"),
             "prefix": params.get("logStreamNamePrefix"), "start": start, "end": end,
             "pattern": params.get("filterPattern") or ""}
    cursor = _decode(params["nextToken"], scope) if params.get("nextToken") else {}
    offsets = cursor.get("o", {})
    if not isinstance(offsets, dict):
        raise InvalidParameter(_BAD_TOKEN)

    readers: list[Forward] = []
    iters: list[Iterator[Line]] = []
    heap: list[tuple[int, int, int, Line]] = []
    for index, stream in enumerate(streams):
        offset = _offset(offsets.get(stream.name, 0))
        if offset and not stream.log.at_boundary(offset, stream.log.end()):
            raise InvalidParameter(_BAD_TOKEN)
        reader = stream.log.forward(offset, _FILTER_CHUNK)
        lines = (line for line in reader if in_range(line) and matches(line.message))
        readers.append(reader)
        iters.append(lines)
        _push(heap, index, next(lines, None))

    events: list[dict[str, Any]] = []
    size = 0
    while heap and len(events) < limit:
        _, index, _, line = heap[0]
        if events and size + _size(line) > MAX_RESPONSE_BYTES:
            break
        heapq.heappop(heap)
        size += _size(line)
        name = streams[index].name
        events.append({"logStreamName": name, "timestamp": line.timestamp_ms,
                       "message": line.message, "ingestionTime": line.timestamp_ms,
                       "eventId": _event_id(name, line)})
        _push(heap, index, next(iters[index], None))

    pending = {index: line.start for _, index, _, line in heap}
    result: dict[str, Any] = {
        "events": events,
        "searchedLogStreams": [{"logStreamName": s.name, "searchedCompletely": i not in pending}
                               for i, s in enumerate(streams)],
    }
    if pending:
        # Where each stream resumes: its next unsent event, or past all it has.
        resume = {s.name: pending.get(i, readers[i].pos) for i, s in enumerate(streams)}
        result["nextToken"] = _encode({"o": {k: v for k, v in resume.items() if v}}, scope)
    return result


def _push(heap: list[tuple[int, int, int, Line]], index: int, line: Line | None) -> None:
    if line is not None:
        heapq.heappush(heap, (line.timestamp_ms, index, line.start, line))


def _event_id(stream: str, line: Line) -> str:
    # 56 digits like CloudWatch's; unique per stream and byte offset.
    return f"{line.timestamp_ms:020d}{zlib.crc32(stream.encode()):010d}{line.start:026d}"


HANDLERS: dict[str, Handler] = {
    "DescribeLogStreams": describe_log_streams,
    "GetLogEvents": get_log_events,
    "FilterLogEvents": filter_log_events,
}
