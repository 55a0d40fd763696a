"""Batch transform: the request (``transform_request``), and the data side (``transform_data``):
parameters, records, payloads, DataProcessing, ``.out``.

Pure functions over bytes, so these tests feed them bytes: hand-built RecordIO and TFRecord
frames, CSV and JSON files with CRLF and quoting, and a "model" that is a plain function from
request body to answer. Hypothesis checks the invariants: splitting undoes joining, MultiRecord
payloads never pass the limit and lose or reorder no record, slices agree with Python's.
"""

from __future__ import annotations

import copy
import gzip
import itertools
import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.control.transform.data import (
    Record,
    TransformParameters,
    TransformPlan,
    assemble,
    batches,
    container_environment,
    crc32c,
    decompress,
    frame_recordio,
    frame_tfrecord,
    output_name,
    resolve_parameters,
    split,
)
from shipyard.control.transform.filters import (
    CSV,
    JSON,
    JsonPath,
    dump_unit,
    format_of,
    parse_units,
    response_units,
)
from shipyard.control.transform.request import (
    LINE,
    MIB,
    MULTI_RECORD,
    NONE,
    RECORDIO,
    SINGLE_RECORD,
    TFRECORD,
    DataProcessing,
    input_source,
    new_record,
    validate,
)
from shipyard.errors import DataSourceError, SerializationError, ValidationError

MAGIC = struct.pack("<I", 0xCED7230A)


def _request(**overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "TransformJobName": "tj-1",
        "ModelName": "model-1",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                            "S3Uri": "s3://bkt/data"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": "s3://bkt/out", "AssembleWith": "Line",
                            "Accept": "text/csv"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }
    for key, value in overrides.items():
        if value is None:
            request.pop(key, None)
        else:
            request[key] = value
    return request


def _with(request: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``request`` with ``a.b.c`` set (or removed when value is ...)."""
    out = copy.deepcopy(request)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def _run(record: dict[str, Any], data: bytes, model: Callable[[bytes], bytes],
         execution_parameters: Any = None) -> bytes:
    """One object through the plan, with ``model`` answering each request body."""
    plan = TransformPlan.from_record(record, resolve_parameters(record, execution_parameters))
    work = plan.work(data)
    return work.output([model(batch.payload) for batch in work.batches])


# -- validation --------------------------------------------------------------------------------


def test_minimal_request_gets_defaults() -> None:
    request = _request()
    request["TransformInput"].pop("SplitType")
    req = validate(request)
    assert req["TransformInput"]["SplitType"] == "None"
    assert req["TransformInput"]["CompressionType"] == "None"
    # Left to the container's /execution-parameters.
    assert "BatchStrategy" not in req and "MaxPayloadInMB" not in req
    assert "SplitType" not in request["TransformInput"], "the caller's request is not changed"


def test_the_sdk_request_of_reference_5_6_is_valid() -> None:
    request = _request(BatchStrategy="MultiRecord", MaxConcurrentTransforms=2, MaxPayloadInMB=6,
                       Environment={},
                       DataProcessing={"InputFilter": "$[1:]", "OutputFilter": "$",
                                       "JoinSource": "Input"})
    req = validate(request)
    assert req["DataProcessing"] == {"InputFilter": "$[1:]", "OutputFilter": "$",
                                     "JoinSource": "Input"}


@pytest.mark.parametrize("key, member", [
    ("TransformJobName", "transformJobName"),
    ("ModelName", "modelName"),
    ("TransformInput", "transformInput"),
    ("TransformOutput", "transformOutput"),
    ("TransformResources", "transformResources"),
])
def test_required_members(key: str, member: str) -> None:
    with pytest.raises(ValidationError, match=f"Value null at '{member}'.*must not be null"):
        validate(_request(**{key: None}))


def test_required_members_inside_the_request() -> None:
    # SageMaker's model requires them; they have no default.
    with pytest.raises(ValidationError, match="^1 validation error detected: Value null at "
                       "'transformResources.instanceCount' failed to satisfy constraint: "
                       "Member must not be null$"):
        validate(_with(_request(), "TransformResources.InstanceCount", ...))
    with pytest.raises(ValidationError, match="Value null at "
                       "'transformInput.dataSource.s3DataSource.s3DataType'"):
        validate(_with(_request(), "TransformInput.DataSource.S3DataSource.S3DataType", ...))


@pytest.mark.parametrize("path, value, message", [
    ("TransformInput.SplitType", "Lines",
     r"Value 'Lines' at 'transformInput.splitType' .*enum value set: \[None, Line, RecordIO, "
     r"TFRecord\]"),
    ("BatchStrategy", "Multi", r"at 'batchStrategy' .*\[MultiRecord, SingleRecord\]"),
    ("TransformOutput.AssembleWith", "Newline", r"at 'transformOutput.assembleWith'"),
    ("TransformInput.CompressionType", "Zip", r"\[None, Gzip\]"),
    ("MaxPayloadInMB", 101, r"at 'maxPayloadInMB' .*less than or equal to 100"),
    ("MaxPayloadInMB", -1, r"greater than or equal to 0"),
    ("ModelClientConfig", {"InvocationsTimeoutInSeconds": 0},
     r"invocationsTimeoutInSeconds.*greater than or equal to 1"),
    ("ModelClientConfig", {"InvocationsMaxRetries": 4},
     r"invocationsMaxRetries.*less than or equal to 3"),
    ("ModelName", "bad_name", r"at 'modelName'.*regular expression"),
    ("TransformJobName", "x" * 64, r"at 'transformJobName'.*less than or equal to 63"),
    ("TransformOutput.S3OutputPath", "bkt/out",
     r"^1 validation error detected: Value 'bkt/out' at 'transformOutput.s3OutputPath' failed "
     r"to satisfy constraint: Member must satisfy regular expression pattern: "
     r"\^\(https\|s3\)://"),
    ("TransformOutput.S3OutputPath", "https://host/out", r"must be an s3:// or file:// URI"),
    ("TransformInput.DataSource.S3DataSource.S3Uri", "data/",
     r"at 'transformInput.dataSource.s3DataSource.s3Uri' .*regular expression"),
    ("TransformInput.DataSource.S3DataSource.S3Uri", "https://host/data/", r"must be an s3://"),
    ("TransformInput.DataSource.S3DataSource.S3DataType", "AugmentedManifestFile",
     r"^S3DataType AugmentedManifestFile is not supported by Shipyard for transform jobs "
     r"\(S3Prefix, ManifestFile\)$"),
    ("TransformInput.DataSource.S3DataSource.S3DataType", "Converse", r"not supported"),
    ("TransformInput.DataSource", {"FileSystemDataSource": {}},
     r"Value null at 'transformInput.dataSource.s3DataSource' .*must not be null"),
    ("TransformInput.ContentType", "x" * 257, r"less than or equal to 256"),
    ("TransformResources.InstanceCount", 0,
     r"at 'transformResources.instanceCount' .*greater than or equal to 1"),
    ("TransformResources.InstanceCount", 101, r"between 1 and 100"),
    ("TransformResources.InstanceType", "m5.large", r"instanceType"),
    ("Environment", {f"K{i}": "v" for i in range(17)},
     r"at 'environment' .*less than or equal to 16"),
    ("Environment", {"1BAD": "v"}, r"Map keys must satisfy"),
    ("Environment", {"K": "v" * 10241},
     r"at 'environment' .*Map value must satisfy constraint: \[Member must have length less "
     r"than or equal to 10240"),
    ("Environment", {"K": "a\x00b"}, r"Environment value of K contains a NUL"),
    ("DataProcessing", {"JoinSource": "Output"}, r"at 'dataProcessing.joinSource'"),
    ("DataProcessing", {"InputFilter": "$[" + "1," * 31 + "1]"},
     r"dataProcessing.inputFilter.*less than or equal to 63"),
    ("DataProcessing", {"OutputFilter": "$[0:2,246:]"},
     r"only single range filters of format \(eg: \[1:5\]\) are supported"),
])
def test_bad_requests(path: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate(_with(_request(), path, value))


@pytest.mark.parametrize("path, value, message", [
    ("MaxPayloadInMB", "6", "STRING_VALUE can not be converted to an Integer"),
    ("MaxConcurrentTransforms", True, "TRUE_VALUE can not be converted to an Integer"),
    ("Environment", {"K": 1}, "NUMBER_VALUE can not be converted to a String"),
])
def test_values_of_the_wrong_type(path: str, value: Any, message: str) -> None:
    with pytest.raises(SerializationError, match=f"^{message}$"):
        validate(_with(_request(), path, value))


def test_concurrency_times_payload_is_at_most_100() -> None:
    validate(_request(MaxConcurrentTransforms=10, MaxPayloadInMB=10))
    validate(_request(MaxConcurrentTransforms=50, MaxPayloadInMB=0))
    with pytest.raises(ValidationError, match=r"\(11\) multiplied by MaxPayloadInMB \(10\)"):
        validate(_request(MaxConcurrentTransforms=11, MaxPayloadInMB=10))


def test_data_processing_checks_formats() -> None:
    joined = {"JoinSource": "Input"}
    with pytest.raises(ValidationError, match="only index-based JSONPaths"):
        validate(_request(DataProcessing={"InputFilter": "$.features"}))
    with pytest.raises(ValidationError, match="must both be CSV"):
        validate(_with(_request(DataProcessing=joined), "TransformOutput.Accept",
                       "application/json"))
    with pytest.raises(ValidationError, match="set TransformInput.ContentType"):
        validate(_with(_request(DataProcessing=joined), "TransformInput.ContentType", ...))
    with pytest.raises(ValidationError, match="set TransformOutput.Accept"):
        validate(_with(_request(DataProcessing={"OutputFilter": "$[0]"}),
                       "TransformOutput.Accept", "application/x-npy"))
    with pytest.raises(ValidationError, match="SplitType RecordIO carries binary records"):
        validate(_with(_request(DataProcessing=joined), "TransformInput.SplitType", RECORDIO))
    # Accept falls back to ContentType; JSON Lines and JSON are one format.
    request = _with(_request(DataProcessing={"InputFilter": "$.features", **joined}),
                    "TransformInput.ContentType", "application/jsonlines")
    validate(_with(request, "TransformOutput.Accept", ...))
    validate(_with(request, "TransformOutput.Accept", "application/json; charset=utf-8"))
    # Identity filters need no format at all.
    validate(_with(_request(DataProcessing={"InputFilter": "$", "OutputFilter": ""}),
                   "TransformInput.ContentType", "application/x-recordio-protobuf"))


def test_new_record_is_the_describe_document() -> None:
    req = validate(_request(BatchStrategy="SingleRecord", MaxPayloadInMB=2,
                            Environment={"A": "1"}, DataProcessing={"JoinSource": "Input"}))
    record = new_record(req, "arn:aws:sagemaker:us-east-1:000000000000:transform-job/tj-1",
                        1700000000.5)
    assert record["TransformJobStatus"] == "InProgress"
    assert record["TransformJobName"] == "tj-1" and record["ModelName"] == "model-1"
    assert record["CreationTime"] == 1700000000.5
    assert record["BatchStrategy"] == "SingleRecord" and record["MaxPayloadInMB"] == 2
    assert "MaxConcurrentTransforms" not in record
    assert record["Environment"] == {"A": "1"}
    assert record["DataProcessing"] == {"InputFilter": "$", "OutputFilter": "$",
                                        "JoinSource": "Input"}
    assert record["TransformOutput"]["S3OutputPath"] == "s3://bkt/out"
    assert record["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1}
    assert input_source(record) == ("s3://bkt/data", "S3Prefix")
    json.dumps(record)


# -- parameters --------------------------------------------------------------------------------


def test_parameters_request_wins_then_container_then_defaults() -> None:
    container = {"BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 3,
                 "MaxConcurrentTransforms": 4}
    params = resolve_parameters(_request(), container)
    assert (params.batch_strategy, params.max_payload_in_mb,
            params.max_concurrent_transforms) == (SINGLE_RECORD, 3, 4)
    assert params.sources == {"BatchStrategy": "container", "MaxPayloadInMB": "container",
                              "MaxConcurrentTransforms": "container"}
    request = _request(BatchStrategy="MultiRecord", MaxPayloadInMB=0, MaxConcurrentTransforms=2)
    params = resolve_parameters(request, container)
    assert (params.batch_strategy, params.max_payload_in_mb,
            params.max_concurrent_transforms) == (MULTI_RECORD, 0, 2)
    assert set(params.sources.values()) == {"request"}
    assert params.max_payload_bytes == 0
    assert resolve_parameters(_request(), None) == TransformParameters(
        MULTI_RECORD, 6, 1, 600, 3)
    assert resolve_parameters(_request(), None).max_payload_bytes == 6 * MIB


def test_parameters_ignore_odd_container_answers() -> None:
    odd = {"BatchStrategy": "Batch", "MaxPayloadInMB": 500, "MaxConcurrentTransforms": 0}
    assert resolve_parameters(_request(), odd) == TransformParameters()
    assert resolve_parameters(_request(), ["not", "a", "map"]) == TransformParameters()
    # MaxConcurrentTransforms 0 in the request means unset.
    params = resolve_parameters(_request(MaxConcurrentTransforms=0),
                                {"MaxConcurrentTransforms": 8, "BatchStrategy": "MultiRecord"})
    assert params.max_concurrent_transforms == 8 and params.batch_strategy == MULTI_RECORD
    client = resolve_parameters(_request(ModelClientConfig={"InvocationsTimeoutInSeconds": 30,
                                                            "InvocationsMaxRetries": 0}))
    assert (client.invocations_timeout_s, client.invocations_max_retries) == (30, 0)


def test_container_environment_carries_what_the_request_gives() -> None:
    assert container_environment(_request()) == {"SAGEMAKER_BATCH": "true"}
    env = container_environment(_request(BatchStrategy="SingleRecord", MaxPayloadInMB=0,
                                         MaxConcurrentTransforms=3,
                                         Environment={"SAGEMAKER_BATCH": "yes", "X": "1"}))
    assert env == {"SAGEMAKER_BATCH": "yes", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "0",
                   "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
                   "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "3", "X": "1"}


# -- splitting ---------------------------------------------------------------------------------


def _data(records: list[Record]) -> list[bytes]:
    return [record.data for record in records]


def test_line_split_handles_crlf_blank_lines_and_no_final_newline() -> None:
    assert _data(split(b"a,1\r\nb,2\r\n\r\nc,3", LINE)) == [b"a,1", b"b,2", b"c,3"]
    assert [r.number for r in split(b"a\n\nb\n", LINE)] == [1, 3]
    assert _data(split(b"a\rb\n", LINE)) == [b"a\rb"], "a lone CR does not split"
    assert _data(split(b" \n\t\n", LINE)) == [b" ", b"\t"], "content is kept as it is"
    assert split(b"\n\r\n", LINE) == [] and split(b"", LINE) == []


def test_none_split_is_the_whole_object() -> None:
    assert split(b"a\nb\n", NONE) == [Record(b"a\nb\n", b"a\nb\n", 1)]
    assert split(b"", NONE) == []


def test_recordio_matches_dmlc_bytes() -> None:
    single = MAGIC + struct.pack("<I", 5) + b"abcde\0\0\0"
    assert frame_recordio(b"abcde") == single
    # The payload holds the magic number at an aligned offset: the writer cuts it out.
    payload = b"wxyz" + MAGIC + b"q"
    multi = (MAGIC + struct.pack("<I", 1 << 29 | 4) + b"wxyz"
             + MAGIC + struct.pack("<I", 3 << 29 | 1) + b"q\0\0\0")
    assert frame_recordio(payload) == multi
    # Unaligned, it stays in.
    assert frame_recordio(b"w" + MAGIC) == MAGIC + struct.pack("<I", 5) + b"w" + MAGIC + b"\0" * 3
    records = split(single + multi + frame_recordio(b""), RECORDIO)
    assert _data(records) == [b"abcde", payload, b""]
    assert [r.framed for r in records] == [single, multi, MAGIC + b"\0" * 4]


@pytest.mark.parametrize("data, message", [
    (b"\x00" * 8, "no record header at byte 0"),
    (MAGIC + struct.pack("<I", 10) + b"abc", "cut short: 10 bytes announced, 3 remain"),
    (frame_recordio(b"ok") + MAGIC, "record 2 at byte 12 is cut short"),
    (MAGIC + struct.pack("<I", 3 << 29 | 1) + b"q\0\0\0", "part flag 3 out of sequence"),
    (MAGIC + struct.pack("<I", 1 << 29 | 4) + b"wxyz" + frame_recordio(b"x"),
     "record 1 at byte 12: part flag 0 out of sequence"),
], ids=["no-magic", "truncated-data", "truncated-header", "orphan-end-part", "unended-parts"])
def test_recordio_rejects_broken_framing(data: bytes, message: str) -> None:
    with pytest.raises(DataSourceError, match=message):
        split(data, RECORDIO)


def test_recordio_tolerates_missing_padding_at_the_end() -> None:
    assert _data(split(MAGIC + struct.pack("<I", 1) + b"z", RECORDIO)) == [b"z"]


def test_crc32c_known_values() -> None:
    # RFC 3720 B.4 test vectors and the classic check value.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E


def test_tfrecord_round_trip_and_corruption() -> None:
    frames = [frame_tfrecord(p) for p in (b"one", b"", b"three" * 100)]
    assert len(frames[0]) == 8 + 4 + 3 + 4
    records = split(b"".join(frames), TFRECORD)
    assert _data(records) == [b"one", b"", b"three" * 100]
    assert [r.framed for r in records] == frames
    corrupt = bytearray(frames[0])
    corrupt[13] ^= 1
    with pytest.raises(DataSourceError, match="record 1 at byte 0: the data's CRC"):
        split(bytes(corrupt), TFRECORD)
    with pytest.raises(DataSourceError, match="the length's CRC does not match"):
        split(b"not a tfrecord file at all", TFRECORD)
    with pytest.raises(DataSourceError, match="record 2 is cut short"):
        split(frames[0] + frames[2][:20], TFRECORD)


def test_gzip_is_decompressed_before_splitting() -> None:
    assert decompress(gzip.compress(b"a\nb\n"), "Gzip") == b"a\nb\n"
    assert decompress(b"raw", "None") == b"raw"
    with pytest.raises(DataSourceError, match="not gzip data"):
        decompress(b"plain text", "Gzip")
    record = validate(_with(_request(), "TransformInput.CompressionType", "Gzip"))
    assert _run(record, gzip.compress(b"1\n2\n"), lambda body: body.upper()) == b"1\n2\n"


# -- payloads ----------------------------------------------------------------------------------


def _lines(*lines: bytes) -> list[Record]:
    return [Record(line, line, number) for number, line in enumerate(lines, 1)]


def test_single_record_sends_one_record_per_request() -> None:
    got = batches(_lines(b"aa", b"bbb"), LINE, SINGLE_RECORD, 3)
    assert [(b.payload, b.first, b.count) for b in got] == [(b"aa", 0, 1), (b"bbb", 1, 1)]
    with pytest.raises(DataSourceError, match=r"line 2 is 4 bytes, more than MaxPayloadInMB"
                                              r" allows \(3 bytes\)"):
        batches(_lines(b"aa", b"bbbb"), LINE, SINGLE_RECORD, 3)


def test_multi_record_packs_lines_up_to_the_limit() -> None:
    records = _lines(b"aa", b"bb", b"cc", b"dddd")
    # "aa\nbb" is 5 bytes: with a limit of 5 two lines fit, a third would make 8.
    got = batches(records, LINE, MULTI_RECORD, 5)
    assert [b.payload for b in got] == [b"aa\nbb", b"cc", b"dddd"]
    assert [(b.first, b.count) for b in got] == [(0, 2), (2, 1), (3, 1)]
    assert [b.payload for b in batches(records, LINE, MULTI_RECORD, 0)] == [b"aa\nbb\ncc\ndddd"]
    with pytest.raises(DataSourceError, match="line 4 is 4 bytes"):
        batches(records, LINE, MULTI_RECORD, 3)


def test_whole_object_must_fit_unless_split() -> None:
    with pytest.raises(DataSourceError, match="the object is 10 bytes.*set SplitType"):
        batches(split(b"0123456789", NONE), NONE, MULTI_RECORD, 8)


def test_binary_records_keep_framing_only_in_multi_record() -> None:
    frames = [frame_recordio(p) for p in (b"a", b"bb", b"ccc")]
    records = split(b"".join(frames), RECORDIO)
    single = batches(records, RECORDIO, SINGLE_RECORD, MIB)
    assert [b.payload for b in single] == [b"a", b"bb", b"ccc"], "padding and header removed"
    multi = batches(records, RECORDIO, MULTI_RECORD, 2 * 12)
    assert [b.payload for b in multi] == [frames[0] + frames[1], frames[2]]
    assert _data(split(multi[0].payload, RECORDIO)) == [b"a", b"bb"], "the container can split it"


def test_assemble_with_line_adds_missing_newlines_only() -> None:
    assert assemble([b"1", b"2\n", b"", b"3"], "Line") == b"1\n2\n\n3\n"
    assert assemble([b"1", b"2\n", b"3"], "None") == b"12\n3"
    assert assemble([b"1", b"2"], None) == b"12"
    assert output_name("prefix/data.csv") == "prefix/data.csv.out"


def test_line_object_end_to_end_with_crlf_and_multi_record() -> None:
    record = validate(_request(MaxPayloadInMB=1))
    data = b"".join(b"%d,x\r\n" % i for i in range(1000))
    seen: list[int] = []

    def model(body: bytes) -> bytes:
        rows = body.split(b"\n")
        seen.append(len(rows))
        return b"\n".join(row.split(b",")[0] for row in rows)

    out = _run(record, data, model)
    assert out == b"".join(b"%d\n" % i for i in range(1000))
    assert seen == [1000], "every line fits in one MultiRecord request"


def test_container_parameters_drive_batching() -> None:
    record = validate(_request())
    bodies: list[bytes] = []

    def model(body: bytes) -> bytes:
        bodies.append(body)
        return body

    assert _run(record, b"a\nb\nc\n", model, {"BatchStrategy": "SINGLE_RECORD"}) == b"a\nb\nc\n"
    assert bodies == [b"a", b"b", b"c"]


# -- DataProcessing ----------------------------------------------------------------------------


def _csv_score(body: bytes) -> bytes:
    """A model for CSV rows of numbers: one line with their sum per row."""
    rows = body.decode().splitlines()
    return "\n".join(str(sum(float(v) for v in row.split(","))) for row in rows).encode()


def test_csv_input_filter_join_and_output_filter() -> None:
    record = validate(_request(MaxPayloadInMB=1, DataProcessing={
        "InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}))
    data = b'id1,1,2\r\n"id,2",3,4\r\nid3,5,6'
    sent: list[bytes] = []

    def model(body: bytes) -> bytes:
        sent.append(body)
        return _csv_score(body)

    assert _run(record, data, model) == b'id1,3.0\n"id,2",7.0\nid3,11.0\n'
    assert sent == [b"1,2\n3,4\n5,6"], "the id column never reaches the model"


def test_csv_join_keeps_every_input_column() -> None:
    record = validate(_request(BatchStrategy="SingleRecord",
                               DataProcessing={"JoinSource": "Input"}))
    out = _run(record, b"1,2,3\n4,5,6\n", lambda body: b"0.5,0.25\n")
    assert out == b"1,2,3,0.5,0.25\n4,5,6,0.5,0.25\n"


def _json_request(**processing: str) -> dict[str, Any]:
    request = _request(DataProcessing=processing)
    request["TransformInput"]["ContentType"] = "application/jsonlines"
    request["TransformOutput"]["Accept"] = "application/jsonlines"
    return validate(request)


def _json_model(body: bytes) -> bytes:
    """One JSON line per input line: {"label": sum of the features}."""
    return b"\n".join(json.dumps({"label": sum(json.loads(line))}).encode()
                      for line in body.splitlines())


def test_json_lines_filter_join_and_select() -> None:
    record = _json_request(InputFilter="$.features", JoinSource="Input",
                           OutputFilter="$['id','SageMakerOutput']")
    data = (b'{"id": "a", "features": [1, 2]}\n'
            b'{"id": "b", "features": [3, 4], "extra": true}\n')
    assert _run(record, data, _json_model) == (
        b'{"id":"a","SageMakerOutput":{"label":3}}\n'
        b'{"id":"b","SageMakerOutput":{"label":7}}\n')


def test_json_join_wraps_values_that_are_not_objects() -> None:
    record = _json_request(JoinSource="Input")
    out = _run(record, b"[1, 2]\n[3, 4]\n", _json_model)
    assert out == (b'{"SageMakerInput":[1,2],"SageMakerOutput":{"label":3}}\n'
                   b'{"SageMakerInput":[3,4],"SageMakerOutput":{"label":7}}\n')


def test_json_array_answer_is_matched_element_by_element() -> None:
    record = _json_request(JoinSource="Input", OutputFilter="$.SageMakerOutput")

    def model(body: bytes) -> bytes:
        return json.dumps([sum(json.loads(line)) for line in body.splitlines()]).encode()

    assert _run(record, b"[1]\n[2, 3]\n[4]\n", model) == b"1\n5\n4\n"


def test_whole_json_document_with_split_none() -> None:
    request = _request(DataProcessing={"InputFilter": "$.instances", "JoinSource": "Input"})
    request["TransformInput"].update(ContentType="application/json", SplitType="None")
    request["TransformOutput"]["Accept"] = "application/json"
    record = validate(request)
    data = json.dumps({"instances": [[1, 2]], "id": 9}, indent=2).encode()
    out = _run(record, data, lambda body: json.dumps({"predictions": json.loads(body)}).encode())
    assert json.loads(out) == {"instances": [[1, 2]], "id": 9,
                               "SageMakerOutput": {"predictions": [[1, 2]]}}


def test_output_filter_alone_reads_the_answer() -> None:
    record = _json_request(OutputFilter="$.label")
    assert _run(record, b"[1]\n[2]\n", _json_model) == b"1\n2\n"


def test_answer_count_mismatch_fails_with_both_counts() -> None:
    record = validate(_request(DataProcessing={"JoinSource": "Input"}))
    with pytest.raises(DataSourceError, match=r"request 1 \(lines 1-3\): the model answered 1"
                                              r" line for 3 records; .*SingleRecord"):
        _run(record, b"1\n2\n3\n", lambda body: b"0.5\n")
    record = _json_request(JoinSource="Input")
    with pytest.raises(DataSourceError, match=r"one JSON document \(an object\) for 2 records"):
        _run(record, b"[1]\n[2]\n", lambda body: b'{"a": 1}')


def test_bad_records_name_their_line() -> None:
    record = _json_request(InputFilter="$.features")
    with pytest.raises(DataSourceError, match=r"line 2: \$.features: no key 'features'"):
        _run(record, b'{"features": [1]}\n{"other": 1}\n', _json_model)
    with pytest.raises(DataSourceError, match=r"line 3: line 1 is not JSON"):
        _run(record, b'{"features": [1]}\n\n{"features": \n', _json_model)
    record = validate(_request(DataProcessing={"InputFilter": "$[5]"}))
    with pytest.raises(DataSourceError, match=r"line 1: \$\[5\]: index 5 is outside an array"):
        _run(record, b"1,2\n", _csv_score)


def test_identity_processing_passes_answers_through_untouched() -> None:
    record = validate(_request(DataProcessing={"InputFilter": "$", "OutputFilter": "$",
                                               "JoinSource": "None"}))
    assert not DataProcessing.from_record(record).parses_input
    assert _run(record, b"1, 2\n", lambda body: b"anything \x00 at all") == (
        b"anything \x00 at all\n")


# -- JSONPath ----------------------------------------------------------------------------------


ROW = ["id", "a", "b", "c", "d", "e", "f"]


@pytest.mark.parametrize("path, expected", [
    ("$", ROW),
    ("", ROW),
    ("$[1:]", ROW[1:]),
    ("$[0,5:]", ["id", "e", "f"]),
    ("$[-1]", "f"),
    ("$[0,-1]", ["id", "f"]),
    ("$[ 0 , -2 ]", ["id", "e"]),
    ("$[2:5]", ["b", "c", "d"]),
    ("$[:2]", ["id", "a"]),
    ("$[-2:]", ["e", "f"]),
    ("$[5:100]", ["e", "f"]),
    ("$[*]", ROW),
])
def test_paths_on_a_csv_row(path: str, expected: Any) -> None:
    assert JsonPath.parse(path).evaluate(ROW) == expected


DOC = {"id": 7, "features": [1.5, 2, 3], "meta": {"a": 1, "b": [4, 5]},
       "SageMakerOutput": {"label": 1}, "odd key": "x"}


@pytest.mark.parametrize("path, expected", [
    ("$.features", [1.5, 2, 3]),
    ("$['id','SageMakerOutput']", {"id": 7, "SageMakerOutput": {"label": 1}}),
    ('$["id", "missing"]', {"id": 7}),
    ("$.meta.*", [1, [4, 5]]),
    ("$.meta['a','b']", {"a": 1, "b": [4, 5]}),
    ("$.meta.['a','b']", {"a": 1, "b": [4, 5]}),
    ("$.meta.b[-1]", 5),
    ("$.features[1:]", [2, 3]),
    ("$['odd key']", "x"),
    ("$['id','meta'].a", [1]),
    ("$.*.b", [[4, 5]]),
])
def test_paths_on_a_json_object(path: str, expected: Any) -> None:
    assert JsonPath.parse(path).evaluate(DOC) == expected


@pytest.mark.parametrize("path, message", [
    ("$.missing", "no key 'missing'"),
    ("$.features[3]", "index 3 is outside an array of 3"),
    ("$.features[-4]", "index -4 is outside"),
    ("$.features.x", "'x' selected in an array of 3"),
    ("$.id[0]", "an index applied to a int value"),
    ("$[0]", "an index applied to an object"),
    ("$.id.*", "'\\*' applied to a int value"),
])
def test_definite_misses_are_errors(path: str, message: str) -> None:
    with pytest.raises(DataSourceError, match=message):
        JsonPath.parse(path).evaluate(DOC)


@pytest.mark.parametrize("path, message", [
    ("features", "must start with \\$"),
    ("$..id", "recursive descent"),
    ("$[?(@.id)]", "filter and script expressions"),
    ("$[::2]", "slice steps"),
    ("$[1:2:1]", "slice steps"),
    ("$[1:3,5:]", "only single range filters"),
    ("$['a',1]", "mixes names and indexes"),
    ("$[*,1]", "cannot be combined"),
    ("$[", "never closed"),
    ("$['a", "unterminated"),
    ("$.", "a name is expected"),
    ("$[]", "is not an index"),
    ("$[a]", "is not an index"),
    ("$ .a", "unexpected ' '"),
])
def test_unsupported_paths_are_refused(path: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JsonPath.parse(path)


def test_formats() -> None:
    assert format_of("text/csv; charset=utf-8") == CSV
    assert format_of("Application/JSON") == JSON
    assert format_of("application/jsonlines") == JSON
    assert format_of("application/x-npy") is None and format_of(None) is None


def test_response_units() -> None:
    assert response_units(b"1\r\n2\r\n", CSV, 2) == [["1"], ["2"]]
    assert response_units(b'{"a":\n 1}', JSON, 1) == [{"a": 1}]
    assert response_units(b"[1, 2]", JSON, 2) == [1, 2]
    assert response_units(b"[1, 2]", JSON, 1) == [[1, 2]]
    assert response_units(b"1\n2\n", JSON, 2) == [1, 2]
    with pytest.raises(DataSourceError, match="2 lines for 3 records"):
        response_units(b"1\n2\n", JSON, 3)
    with pytest.raises(DataSourceError, match="not UTF-8"):
        response_units(b"\xff\n", CSV, 1)


# -- properties --------------------------------------------------------------------------------

_line = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"\n" not in b and not b.endswith(b"\r"))


@given(st.lists(_line, max_size=30), st.sampled_from([b"\n", b"\r\n"]), st.booleans())
def test_line_split_undoes_join(lines: list[bytes], newline: bytes, final: bool) -> None:
    data = newline.join(lines) + (newline if final and lines else b"")
    assert _data(split(data, LINE)) == lines


_payload = st.one_of(
    st.binary(max_size=64),
    st.lists(st.sampled_from([MAGIC, b"ab", b"abcd", b"\x0a", b"\xce\xd7"]), max_size=12
             ).map(b"".join),
)


@given(st.lists(_payload, max_size=12))
def test_recordio_split_undoes_framing(payloads: list[bytes]) -> None:
    frames = [frame_recordio(p) for p in payloads]
    records = split(b"".join(frames), RECORDIO)
    assert _data(records) == payloads
    assert [r.framed for r in records] == frames
    assert all(len(frame) % 4 == 0 for frame in frames)


@settings(max_examples=50)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_tfrecord_split_undoes_framing(payloads: list[bytes]) -> None:
    frames = [frame_tfrecord(p) for p in payloads]
    assert _data(split(b"".join(frames), TFRECORD)) == payloads


@given(st.lists(_line, min_size=1, max_size=40), st.integers(min_value=40, max_value=200),
       st.sampled_from([LINE, RECORDIO]))
def test_multi_record_batches_respect_the_limit_and_keep_order(
        lines: list[bytes], limit: int, split_type: str) -> None:
    if split_type == LINE:
        records = split(b"\n".join(lines), LINE)
    else:
        records = split(b"".join(frame_recordio(line) for line in lines), RECORDIO)
    got = batches(records, split_type, MULTI_RECORD, limit)
    assert all(len(batch.payload) <= limit for batch in got)
    # Back to back, they cover every record once, in order.
    assert [batch.first for batch in got] == [sum(b.count for b in got[:i])
                                              for i in range(len(got))]
    assert sum(batch.count for batch in got) == len(records)
    assert [data for batch in got for data in _data(split(batch.payload, split_type))] == lines
    # Greedy: the next record would not have fit in any request but the last.
    sep = 1 if split_type == LINE else 0
    for batch, following in itertools.pairwise(got):
        nxt = records[following.first].framed
        assert len(batch.payload) + sep + len(nxt) > limit


@given(st.lists(st.integers(min_value=-3, max_value=3), min_size=0, max_size=6),
       st.one_of(st.none(), st.integers(-8, 8)), st.one_of(st.none(), st.integers(-8, 8)))
def test_slices_agree_with_python(values: list[int], start: int | None,
                                  stop: int | None) -> None:
    text = f"$[{'' if start is None else start}:{'' if stop is None else stop}]"
    assert JsonPath.parse(text).evaluate(values) == values[start:stop]


@given(st.lists(st.integers(), min_size=1, max_size=6), st.data())
def test_indexes_agree_with_python(values: list[int], data: st.DataObject) -> None:
    indexes = data.draw(st.lists(st.integers(-len(values), len(values) - 1), min_size=1,
                                 max_size=4))
    path = JsonPath.parse(f"$[{','.join(map(str, indexes))}]")
    expected = [values[i] for i in indexes]
    assert path.evaluate(values) == (expected[0] if len(indexes) == 1 else expected)


_field = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
                 max_size=8)


@given(st.lists(st.lists(_field, min_size=1, max_size=5), min_size=1, max_size=5),
       st.lists(_field, min_size=1, max_size=3))
def test_csv_join_appends_the_output_columns(rows: list[list[str]],
                                             output: list[str]) -> None:
    rows = [row for row in rows if row != [""]] or [["x"]]  # an empty line is no row
    record = validate(_request(BatchStrategy="SingleRecord",
                               DataProcessing={"JoinSource": "Input"}))
    data = b"\r\n".join(dump_unit(row, CSV) for row in rows)
    out = _run(record, data, lambda body: dump_unit(output, CSV))
    assert parse_units(out, CSV) == [row + output for row in rows]
