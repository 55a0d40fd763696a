"""Batch transform jobs, the data side: parameters, records, request payloads, ``.out`` files.

Implements what a transform job does with its data (platform-api.md 3.7, 1.6, 5.6) as pure
functions over bytes; the request is ``control.transform_request``'s, and the driver
(``control.transform``) does the I/O:

1. ``resolve_parameters``: BatchStrategy, MaxPayloadInMB, MaxConcurrentTransforms from the
   request, else the container's ``GET /execution-parameters``, else SageMaker's defaults
   (MultiRecord, 6 MB, 1); ``container_environment`` gives the ``SAGEMAKER_BATCH*`` variables.
2. ``TransformPlan.work(object bytes)``: decompress (``CompressionType: Gzip``), ``split`` into
   records (``SplitType``), apply ``InputFilter``, and pack the records into request payloads
   (``batches``: one record each for SingleRecord, as many as fit in MaxPayloadInMB for
   MultiRecord).
3. ``ObjectWork.output(responses)``: per request, ``JoinSource`` and ``OutputFilter``, then
   ``assemble`` (``AssembleWith``) into the bytes of ``<input relative path>.out``. Joining
   needs one output per record sent: with MultiRecord the answer is split back into lines (or,
   for JSON, the elements of one array); when the count differs from the records sent, the
   object fails with both counts named, since no output can be matched to its input.

Records: ``Line`` splits on ``\\n`` (a ``\\r`` before it is dropped too, so CRLF files give the
same records; a lone ``\\r`` does not split); empty lines are no records, so a trailing newline
or a blank line sends nothing to the model. ``RecordIO`` is MXNet's framing (dmlc-core
``recordio.h``: magic ``0xced7230a``, flag and length, 4-byte padding, multi-part records).
``TFRecord`` is TensorFlow's (length, masked CRC-32C of the length, data, masked CRC-32C of
the data; both checked). As AWS documents for binary formats, SingleRecord sends a record's
bare payload ("padding is removed") and MultiRecord sends the records with their framing, as
they were in the file, so the container can split them again. A MultiRecord ``Line`` payload
is its records joined with ``\\n``. ``None`` sends the whole object (an empty object gives an
empty ``.out`` and no request).

Errors about one object's data raise ``DataSourceError`` with the line or record; the driver
prefixes the object's name and fails the job with it ("If any object fails ... marks the job
as failed").
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from shipyard.control.transform.filters import (
    CSV,
    JSON,
    filter_units,
    join_unit,
    parse_units,
    response_units,
)
from shipyard.control.transform.request import (
    DEFAULT_BATCH_STRATEGY,
    DEFAULT_INVOCATIONS_MAX_RETRIES,
    DEFAULT_INVOCATIONS_TIMEOUT_S,
    DEFAULT_MAX_CONCURRENT_TRANSFORMS,
    DEFAULT_MAX_PAYLOAD_IN_MB,
    GZIP,
    LINE,
    MAX_PAYLOAD_IN_MB,
    MIB,
    MULTI_RECORD,
    NONE,
    RECORDIO,
    SINGLE_RECORD,
    TFRECORD,
    DataProcessing,
)
from shipyard.errors import DataSourceError, ValidationError

OUTPUT_SUFFIX = ".out"

#: Environment the platform sets on the serving container of a transform job (1.6).
BATCH_ENV = "SAGEMAKER_BATCH"
MAX_PAYLOAD_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
BATCH_STRATEGY_ENV = "SAGEMAKER_BATCH_STRATEGY"
MAX_CONCURRENT_TRANSFORMS_ENV = "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS"
#: BatchStrategy as the container's environment (and some ``/execution-parameters``) spell it.
STRATEGY_ENV_VALUES = {MULTI_RECORD: "MULTI_RECORD", SINGLE_RECORD: "SINGLE_RECORD"}

RECORDIO_MAGIC = 0xCED7230A
_RECORDIO_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_RECORDIO_LENGTH_MASK = (1 << 29) - 1
_TFRECORD_MASK_DELTA = 0xA282EAD8


# -- output objects --------------------------------------------------------------------------


def output_name(relative_path: str) -> str:
    """``data/part-1.csv`` -> ``data/part-1.csv.out``: its key under ``S3OutputPath``."""
    return relative_path + OUTPUT_SUFFIX


# -- parameters and the container's environment ------------------------------------------------


@dataclass(frozen=True)
class TransformParameters:
    """What one job runs with, once the request and the container have had their say."""

    batch_strategy: str = DEFAULT_BATCH_STRATEGY
    max_payload_in_mb: int = DEFAULT_MAX_PAYLOAD_IN_MB
    max_concurrent_transforms: int = DEFAULT_MAX_CONCURRENT_TRANSFORMS
    invocations_timeout_s: int = DEFAULT_INVOCATIONS_TIMEOUT_S
    invocations_max_retries: int = DEFAULT_INVOCATIONS_MAX_RETRIES
    #: Where each of the first three came from: "request", "container" or "default".
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def max_payload_bytes(self) -> int:
        """The payload limit in bytes; 0 means none (AWS: chunked encoding)."""
        return self.max_payload_in_mb * MIB


def _strategy(value: Any) -> str | None:
    for strategy, env_value in STRATEGY_ENV_VALUES.items():
        if value in (strategy, env_value):
            return strategy
    return None


def _container_int(value: Any, low: int, high: int) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    return None


def resolve_parameters(record: dict[str, Any], execution_parameters: Any = None
                       ) -> TransformParameters:
    """The request wins, then the container's ``GET /execution-parameters`` answer (its JSON,
    or None when it has none), then SageMaker's defaults.

    The container may spell BatchStrategy ``MultiRecord`` or ``MULTI_RECORD`` (AWS's XGBoost
    and Shipyard's toolkit answer the latter); values out of range are ignored.
    ``MaxConcurrentTransforms`` 0 in the request means "unset", as AWS documents.
    """
    container = execution_parameters if isinstance(execution_parameters, dict) else {}
    sources: dict[str, str] = {}

    def pick(key: str, requested: Any, offered: Any, default: Any) -> Any:
        for source, value in (("request", requested), ("container", offered)):
            if value is not None:
                sources[key] = source
                return value
        sources[key] = "default"
        return default

    requested_concurrency = record.get("MaxConcurrentTransforms") or None
    client = record.get("ModelClientConfig") or {}
    return TransformParameters(
        batch_strategy=pick("BatchStrategy", record.get("BatchStrategy"),
                            _strategy(container.get("BatchStrategy")), DEFAULT_BATCH_STRATEGY),
        max_payload_in_mb=pick("MaxPayloadInMB", record.get("MaxPayloadInMB"),
                               _container_int(container.get("MaxPayloadInMB"), 0,
                                              MAX_PAYLOAD_IN_MB),
                               DEFAULT_MAX_PAYLOAD_IN_MB),
        max_concurrent_transforms=pick(
            "MaxConcurrentTransforms", requested_concurrency,
            _container_int(container.get("MaxConcurrentTransforms"), 1, 1 << 16),
            DEFAULT_MAX_CONCURRENT_TRANSFORMS),
        invocations_timeout_s=client.get("InvocationsTimeoutInSeconds",
                                         DEFAULT_INVOCATIONS_TIMEOUT_S),
        invocations_max_retries=client.get("InvocationsMaxRetries",
                                           DEFAULT_INVOCATIONS_MAX_RETRIES),
        sources=sources,
    )


def container_environment(record: dict[str, Any]) -> dict[str, str]:
    """``SAGEMAKER_BATCH*`` for the serving container, then the job's ``Environment``.

    As SDK local mode does (1.6), only values the request gives are passed: the container is
    started before ``/execution-parameters`` is asked, and a value left unset is the
    container's to choose there. The model's own environment goes below these.
    """
    env = {BATCH_ENV: "true"}
    if record.get("MaxPayloadInMB") is not None:
        env[MAX_PAYLOAD_ENV] = str(record["MaxPayloadInMB"])
    if record.get("BatchStrategy") is not None:
        env[BATCH_STRATEGY_ENV] = STRATEGY_ENV_VALUES[record["BatchStrategy"]]
    if record.get("MaxConcurrentTransforms"):
        env[MAX_CONCURRENT_TRANSFORMS_ENV] = str(record["MaxConcurrentTransforms"])
    env.update(record.get("Environment") or {})
    return env


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record of an input object."""

    #: The record alone: a line without its terminator, a RecordIO/TFRecord payload.
    data: bytes
    #: How it travels in a MultiRecord payload: the line, or the binary record with its framing.
    framed: bytes
    #: Its line number (Line) or 1-based position (RecordIO, TFRecord), for messages.
    number: int


def decompress(data: bytes, compression_type: str) -> bytes:
    """``CompressionType: Gzip``: "SageMaker automatically decompresses the data"."""
    if compression_type != GZIP:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataSourceError(f"CompressionType is Gzip but the object is not gzip data"
                              f" ({exc})") from None


def split(data: bytes, split_type: str) -> list[Record]:
    """An object's records, in order (see the module docstring for each SplitType)."""
    if not data:
        return []
    if split_type == LINE:
        return _split_lines(data)
    if split_type == RECORDIO:
        return _split_recordio(data)
    if split_type == TFRECORD:
        return _split_tfrecord(data)
    return [Record(data, data, 1)]


def _split_lines(data: bytes) -> list[Record]:
    out = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line:
            out.append(Record(line, line, number))
    return out


def _split_recordio(data: bytes) -> list[Record]:
    """dmlc-core ``RecordIOReader::NextRecord``: parts flagged 1, 2..., 3 are one record whose
    pieces the writer cut where the payload held the magic number; it is put back between."""
    out: list[Record] = []
    pos, size = 0, len(data)
    while pos < size:
        number, start = len(out) + 1, pos
        parts: list[bytes] = []
        while True:
            if pos + 8 > size:
                raise DataSourceError(f"RecordIO record {number} at byte {pos} is cut short:"
                                      f" a header needs 8 bytes, {size - pos} remain")
            magic, lrec = struct.unpack_from("<II", data, pos)
            if magic != RECORDIO_MAGIC:
                raise DataSourceError(
                    f"RecordIO record {number}: no record header at byte {pos} (found"
                    f" {magic:#010x}, expected {RECORDIO_MAGIC:#010x}); is the data RecordIO?")
            flag, length = lrec >> 29, lrec & _RECORDIO_LENGTH_MASK
            if (flag in (2, 3)) != bool(parts):
                raise DataSourceError(f"RecordIO record {number} at byte {pos}: part flag"
                                      f" {flag} out of sequence")
            pos += 8
            if pos + length > size:
                raise DataSourceError(f"RecordIO record {number} is cut short: {length} bytes"
                                      f" announced, {size - pos} remain")
            parts.append(data[pos:pos + length])
            # The padding to 4 bytes may be missing at the very end: nothing is lost.
            pos = min(pos + ((length + 3) & ~3), size)
            if flag in (0, 3):
                break
        out.append(Record(_RECORDIO_MAGIC_BYTES.join(parts), data[start:pos], number))
    return out


def frame_recordio(payload: bytes) -> bytes:
    """One record as MXNet's ``RecordIOWriter::WriteRecord`` writes it."""
    if len(payload) > _RECORDIO_LENGTH_MASK:
        raise ValidationError("RecordIO records are limited to 2^29 - 1 bytes")
    chunks, done = [], 0
    for index in range(0, len(payload) - 3, 4):
        if payload[index:index + 4] == _RECORDIO_MAGIC_BYTES:
            flag = 2 if done else 1
            chunks += [_RECORDIO_MAGIC_BYTES, struct.pack("<I", flag << 29 | (index - done)),
                       payload[done:index]]
            done = index + 4
    flag = 3 if done else 0
    tail = payload[done:]
    chunks += [_RECORDIO_MAGIC_BYTES, struct.pack("<I", flag << 29 | len(tail)), tail,
               b"\0" * (-len(payload) % 4)]
    return b"".join(chunks)


@cache
def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord uses; pure Python."""
    table = _crc32c_table()
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _TFRECORD_MASK_DELTA) & 0xFFFFFFFF


def _split_tfrecord(data: bytes) -> list[Record]:
    out: list[Record] = []
    pos, size = 0, len(data)
    while pos < size:
        number = len(out) + 1
        if pos + 12 > size:
            raise DataSourceError(f"TFRecord record {number} at byte {pos} is cut short: a"
                                  f" header needs 12 bytes, {size - pos} remain")
        (length,) = struct.unpack_from("<Q", data, pos)
        (length_crc,) = struct.unpack_from("<I", data, pos + 8)
        if _masked_crc(data[pos:pos + 8]) != length_crc:
            raise DataSourceError(f"TFRecord record {number} at byte {pos}: the length's CRC"
                                  " does not match; is the data TFRecord?")
        end = pos + 12 + length + 4
        if end > size:
            raise DataSourceError(f"TFRecord record {number} is cut short: {length} bytes"
                                  f" announced, {max(size - pos - 12, 0)} remain")
        payload = data[pos + 12:end - 4]
        if _masked_crc(payload) != struct.unpack_from("<I", data, end - 4)[0]:
            raise DataSourceError(f"TFRecord record {number} at byte {pos}: the data's CRC"
                                  " does not match (corrupt record)")
        out.append(Record(payload, data[pos:end], number))
        pos = end
    return out


def frame_tfrecord(payload: bytes) -> bytes:
    """One record as TensorFlow's ``TFRecordWriter`` writes it."""
    length = struct.pack("<Q", len(payload))
    return b"".join([length, struct.pack("<I", _masked_crc(length)), payload,
                     struct.pack("<I", _masked_crc(payload))])


# -- request payloads --------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One request: its body and the records it carries (``records[first:first + count]``)."""

    payload: bytes
    first: int
    count: int


def _label(record: Record, split_type: str) -> str:
    if split_type == NONE:
        return "the object"
    return f"line {record.number}" if split_type == LINE else f"record {record.number}"


def batches(records: Sequence[Record], split_type: str, strategy: str,
            max_payload_bytes: int) -> list[Batch]:
    """Pack records into request bodies, in order; ``max_payload_bytes`` 0 means no limit.

    SingleRecord (and SplitType None) sends each record's ``data``; MultiRecord sends as many
    records' ``framed`` bytes as fit, joined with ``\\n`` for Line and back to back otherwise.
    A record that does not fit alone is an error: SageMaker's MaxPayloadInMB "must be greater
    than, or equal to, the size of a single record".
    """
    limit = max_payload_bytes or None

    def too_large(record: Record, size: int) -> DataSourceError:
        hint = ("set SplitType to split the object into records"
                if split_type == NONE else "raise MaxPayloadInMB (at most 100)")
        return DataSourceError(
            f"{_label(record, split_type)} is {size} bytes, more than MaxPayloadInMB allows"
            f" ({max_payload_bytes} bytes); {hint}, or set MaxPayloadInMB to 0 for no limit")

    if strategy == SINGLE_RECORD or split_type == NONE:
        out = []
        for index, record in enumerate(records):
            if limit is not None and len(record.data) > limit:
                raise too_large(record, len(record.data))
            out.append(Batch(record.data, index, 1))
        return out
    separator = b"\n" if split_type == LINE else b""
    out, start, size = [], 0, 0
    for index, record in enumerate(records):
        length = len(record.framed)
        if limit is not None and length > limit:
            raise too_large(record, length)
        grown = size + length + (len(separator) if index > start else 0)
        if limit is not None and grown > limit:
            out.append(Batch(separator.join(r.framed for r in records[start:index]), start,
                             index - start))
            start, grown = index, length
        size = grown
    if start < len(records):
        out.append(Batch(separator.join(r.framed for r in records[start:]), start,
                         len(records) - start))
    return out


def assemble(pieces: Iterable[bytes], assemble_with: str | None) -> bytes:
    """``AssembleWith``: Line ends every piece with ``\\n`` (unless it already ends with one),
    None concatenates them as they are."""
    if assemble_with != LINE:
        return b"".join(pieces)
    return b"".join(piece if piece.endswith(b"\n") else piece + b"\n" for piece in pieces)


# -- DataProcessing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformPlan:
    """How every object of one job becomes requests and an ``.out`` file."""

    split_type: str
    compression_type: str
    batch_strategy: str
    max_payload_bytes: int
    assemble_with: str
    processing: DataProcessing

    @classmethod
    def from_record(cls, record: dict[str, Any], parameters: TransformParameters
                    ) -> TransformPlan:
        tin = record["TransformInput"]
        return cls(
            split_type=tin.get("SplitType") or NONE,
            compression_type=tin.get("CompressionType") or NONE,
            batch_strategy=parameters.batch_strategy,
            max_payload_bytes=parameters.max_payload_bytes,
            assemble_with=record["TransformOutput"].get("AssembleWith") or NONE,
            processing=DataProcessing.from_record(record),
        )

    def work(self, data: bytes) -> ObjectWork:
        """One object's requests; ``DataSourceError`` when its data cannot be sent."""
        records = split(decompress(data, self.compression_type), self.split_type)
        inputs: list[list[Any]] = []
        processing = self.processing
        if processing.parses_input:
            fmt = processing.input_format or CSV
            sent = []
            for record in records:
                try:
                    units = parse_units(record.data, fmt)
                    payload = (record.data if processing.input_filter.identity
                               else filter_units(processing.input_filter, units, fmt))
                except DataSourceError as exc:
                    raise DataSourceError(f"{_label(record, self.split_type)}: {exc}") from None
                sent.append(Record(payload, payload, record.number))
                inputs.append(units)
            records = sent
        return ObjectWork(self, records, inputs,
                          batches(records, self.split_type, self.batch_strategy,
                                  self.max_payload_bytes))


@dataclass(frozen=True)
class ObjectWork:
    """One object's requests, and how their answers become its ``.out`` bytes."""

    plan: TransformPlan
    #: The records as sent (after InputFilter).
    records: list[Record]
    #: Per record, its parsed original input (CSV rows or JSON values), for JoinSource.
    inputs: list[list[Any]]
    batches: list[Batch]

    def finish(self, index: int, response: bytes) -> list[bytes]:
        """The output pieces of request ``index``'s answer: the answer itself, or with
        JoinSource/OutputFilter one piece per record sent."""
        processing = self.plan.processing
        if not processing.rewrites_output:
            return [response]
        batch = self.batches[index]
        fmt = processing.output_format or JSON
        try:
            if not processing.join_input:
                return [filter_units(processing.output_filter, parse_units(response, fmt), fmt)]
            per_record = self.inputs[batch.first:batch.first + batch.count]
            outputs = response_units(response, fmt, sum(len(units) for units in per_record))
            pieces, position = [], 0
            for units in per_record:
                joined = [join_unit(unit, outputs[position + k], fmt)
                          for k, unit in enumerate(units)]
                position += len(units)
                pieces.append(filter_units(processing.output_filter, joined, fmt))
            return pieces
        except DataSourceError as exc:
            raise DataSourceError(f"{self.describe(index)}: {exc}") from None

    def output(self, responses: Sequence[bytes]) -> bytes:
        """The ``.out`` bytes from every request's answer, in request order."""
        if len(responses) != len(self.batches):
            raise ValueError(f"{len(responses)} answers for {len(self.batches)} requests")
        pieces: list[bytes] = []
        for index, response in enumerate(responses):
            pieces.extend(self.finish(index, response))
        return assemble(pieces, self.plan.assemble_with)

    def describe(self, index: int) -> str:
        """``request 3 (lines 41-60)``, for messages about one request."""
        batch = self.batches[index]
        split_type = self.plan.split_type
        if split_type == NONE:
            return f"request {index + 1} (the whole object)"
        first = _label(self.records[batch.first], split_type)
        if batch.count == 1:
            return f"request {index + 1} ({first})"
        last = self.records[batch.first + batch.count - 1].number
        kind, number = first.split(" ")
        return f"request {index + 1} ({kind}s {number}-{last})"

