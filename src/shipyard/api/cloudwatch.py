"""CloudWatch metrics (``monitoring``) on the API's listener, in both wire protocols botocore
speaks to it.

- **awsJson1.0**: ``POST /`` with ``X-Amz-Target: GraniteServiceVersion20100801.<Operation>``
  and a JSON body (botocore >= 1.42.7: its model lists ``smithy-rpc-v2-cbor``, ``json`` and
  ``query``, and botocore picks ``json`` first). The service is *query compatible*: an error is
  ``{"__type": <the model's error shape>, "message"}`` with the header ``x-amzn-query-error:
  <query code>;Sender`` (or ``;Receiver``), from which botocore takes the code the query
  protocol would have given (``InvalidParameterValue``, not ``InvalidParameterValueException``).
  PutMetricData's bodies over 10 KB come gzipped (``Content-Encoding: gzip``, the model's
  request compression), in either protocol; the 1 MB limit applies to the body as sent.
  botocore sends a non-finite double as the string ``"NaN"``/``"Infinity"``: read here as the
  number it stands for, so the metrics layer refuses it in CloudWatch's words.
- **query**: a form body ``Action=<Operation>&Version=2010-08-01&...`` signed for
  ``monitoring`` (older botocore, which the SageMaker SDK v2 still accepts); lists as
  ``Name.member.N``, maps as ``Name.entry.N.key/value``, timestamps in ISO 8601. The answer is
  ``<{Operation}Response xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/">``, errors
  the query protocol's ``ErrorResponse`` (``api.query``).

Both are read into the same request dictionary, walking botocore's model of the operation,
and answered from the same result: what CloudWatch means is the control plane's
(``ControlPlane.put_metric_data`` and its siblings, ``control.metrics``); the wire is this
module's. Errors leave in CloudWatch's codes whatever raised them: bad input of the
SageMaker kind is ``ValidationError``, a platform fault ``InternalServiceError`` (500).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from shipyard.api import query, validation
from shipyard.control import ControlPlane
from shipyard.control.metrics import InvalidParameterValue, MetricsValidationError
from shipyard.errors import ApiError, ShipyardError, UnknownOperation

if TYPE_CHECKING:
    from botocore.model import Shape

__all__ = ["HANDLERS", "JSON_CONTENT_TYPE", "MAX_INFLATED_BYTES", "MAX_PUT_BYTES", "NAMESPACE",
           "SIGNING_NAME", "TARGET_PREFIX", "XML_CONTENT_TYPE", "Reply", "RequestEntityTooLarge",
           "answer_json", "answer_query", "error_reply"]

TARGET_PREFIX = "GraniteServiceVersion20100801"
#: The credential scope's service: how a query-protocol request says it is CloudWatch's.
SIGNING_NAME = "monitoring"
NAMESPACE = "http://monitoring.amazonaws.com/doc/2010-08-01/"
JSON_CONTENT_TYPE = b"application/x-amz-json-1.0"
XML_CONTENT_TYPE = b"text/xml"
#: PutMetricData's request size limit (CloudWatch quotas: 1 MB per HTTP POST).
MAX_PUT_BYTES = 1024 * 1024
#: What a compressed body may inflate to (the API's limit on a body as sent).
MAX_INFLATED_BYTES = 16 * 1024 * 1024
_SERVICE = "cloudwatch"

Handler = Callable[[ControlPlane, dict[str, Any]], "dict[str, Any] | None"]

#: Operation -> the plane's door; docs/api.md lists these.
HANDLERS: dict[str, Handler] = {
    "PutMetricData": lambda plane, request: plane.put_metric_data(request),
    "GetMetricStatistics": lambda plane, request: plane.get_metric_statistics(request),
    "GetMetricData": lambda plane, request: plane.get_metric_data(request),
    "ListMetrics": lambda plane, request: plane.list_metrics(request),
}


class RequestEntityTooLarge(ApiError):
    code = "RequestEntityTooLarge"
    http_status = 413


@dataclass(frozen=True)
class Reply:
    status: int
    payload: bytes
    content_type: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


# -- answering ------------------------------------------------------------------------------
def answer_json(plane: ControlPlane, operation: str, body: bytes, encoding: str) -> Reply:
    """An awsJson1.0 request for ``operation`` (one of ``HANDLERS``) answered; ``encoding``
    is its ``Content-Encoding``."""
    _check_size(operation, len(body))
    request = validation.parse_json_body(_inflate(body, encoding))
    shape = _input_shape(operation)
    if shape is not None:
        request = _json_doubles(shape, request)
    result = HANDLERS[operation](plane, request) or {}
    payload = json.dumps(result, separators=(",", ":"), allow_nan=False).encode()
    return Reply(200, payload, JSON_CONTENT_TYPE)


def answer_query(plane: ControlPlane, body: bytes, encoding: str, request_id: str,
                 not_implemented: Callable[[str, str], str]) -> Reply:
    """A query-protocol request answered in XML; ``encoding`` is its ``Content-Encoding``.
    An ``Action`` Shipyard lacks is ``InvalidAction``, in the words of
    ``not_implemented(service, operation)``."""
    params = query.parse_body(_inflate(body, encoding))
    operation = params.get("Action", "")
    if operation not in HANDLERS:
        raise UnknownOperation(not_implemented(_SERVICE, operation))
    _check_size(operation, len(body))
    shape = _input_shape(operation)
    request: dict[str, Any] = {}
    if shape is not None:
        tree = _tree({k: v for k, v in params.items() if k not in ("Action", "Version")})
        request = _decode(shape, tree, "")
    result = HANDLERS[operation](plane, request) or {}
    output = _output_shape(operation)
    members = "" if output is None else _xml_members(output, result, "    ")
    return Reply(200, _document(operation, members, output is not None, request_id),
                  XML_CONTENT_TYPE)


def error_reply(protocol: str, exc: ShipyardError, request_id: str) -> Reply:
    """``exc`` as CloudWatch answers it over ``protocol`` (``json`` or ``query``)."""
    code = _query_code(exc, protocol)
    status = exc.http_status
    if protocol == "query":
        return Reply(status, query.error_document(NAMESPACE, code, exc.message, status,
                                                  request_id), XML_CONTENT_TYPE)
    kind = "Sender" if status < 500 else "Receiver"
    error_type = _error_shapes().get(code, code)
    payload = json.dumps({"__type": error_type, "message": exc.message}).encode()
    return Reply(status, payload, JSON_CONTENT_TYPE,
                 [(b"x-amzn-query-error", f"{code};{kind}".encode()),
                  (b"x-amzn-errortype", error_type.encode())])


def _query_code(exc: ShipyardError, protocol: str) -> str:
    """CloudWatch's (query protocol's) code for ``exc``."""
    if exc.code in _error_shapes() or exc.code in ("ValidationError", "RequestEntityTooLarge"):
        return exc.code
    if isinstance(exc, UnknownOperation):
        return "InvalidAction" if protocol == "query" else exc.code
    if exc.code == "ValidationException":
        return "ValidationError"
    if exc.http_status >= 500:
        return "InternalServiceError"
    return query.AUTH_CODES.get(exc.code, exc.code)


def _inflate(body: bytes, encoding: str) -> bytes:
    """The body as sent before ``Content-Encoding``: botocore gzips PutMetricData's bodies
    over 10 KB (the model's ``requestcompression`` trait)."""
    for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
        if coding == "identity":
            continue
        if coding != "gzip":
            raise MetricsValidationError(f"Content-Encoding {coding} is not supported: send "
                                         "gzip or nothing.")
        inflater = zlib.decompressobj(wbits=31)
        try:
            body = inflater.decompress(body, MAX_INFLATED_BYTES + 1)
        except zlib.error as exc:
            raise MetricsValidationError("The request body is not valid gzip.") from exc
        if len(body) > MAX_INFLATED_BYTES or inflater.unconsumed_tail:
            raise RequestEntityTooLarge(f"The request body inflates to over "
                                        f"{MAX_INFLATED_BYTES} bytes.")
    return body


def _check_size(operation: str, size: int) -> None:
    if operation == "PutMetricData" and size > MAX_PUT_BYTES:
        raise RequestEntityTooLarge(f"Request size exceeded the {MAX_PUT_BYTES} byte limit "
                                    "of PutMetricData.")


# -- botocore's model -----------------------------------------------------------------------
def _input_shape(operation: str) -> Shape | None:
    return validation.operation_model(_SERVICE, operation).input_shape


def _output_shape(operation: str) -> Shape | None:
    return validation.operation_model(_SERVICE, operation).output_shape


@cache
def _error_shapes() -> dict[str, str]:
    """Query code -> the error shape's name, for every error the model knows."""
    found: dict[str, str] = {}
    for operation in HANDLERS:
        for shape in validation.operation_model(_SERVICE, operation).error_shapes:
            found[str(shape.metadata.get("error", {}).get("code", shape.name))] = shape.name
    return found


# -- the query protocol, in -----------------------------------------------------------------
_Tree = dict[str, "_Tree | str"]


def _tree(params: dict[str, str]) -> _Tree:
    """``A.member.1.B=x`` pairs as nested dictionaries (``{"A": {"member": {"1": ...}}}``)."""
    root: _Tree = {}
    for key, value in params.items():
        node = root
        *parents, last = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InvalidParameterValue(f"The parameter {key} conflicts with another.")
            node = child
        if isinstance(node.get(last), dict):
            raise InvalidParameterValue(f"The parameter {key} conflicts with another.")
        node[last] = value
    return root


def _decode(shape: Shape, node: _Tree | str, path: str) -> Any:
    """``node`` read as ``shape`` says; ``path`` names it in errors, as the query protocol
    names it."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(node, dict):
            raise InvalidParameterValue(f"The value {node!r} for parameter {path} is invalid.")
        decoded = {}
        for name, member in shape.members.items():
            wire = member.serialization.get("name", name)
            if wire in node:
                decoded[name] = _decode(member, node[wire], f"{path}{'.' if path else ''}"
                                                            f"{wire}")
        return decoded
    if kind in ("list", "map"):
        if node == "":
            return [] if kind == "list" else {}
        if not isinstance(node, dict):
            raise InvalidParameterValue(f"The value {node!r} for parameter {path} is invalid.")
        label = ("entry" if kind == "map"
                 else shape.member.serialization.get("name", "member"))
        items = node.get(label, {})
        if not isinstance(items, dict) or not all(i.isdigit() for i in items):
            raise InvalidParameterValue(f"The parameter {path} is not a list.")
        ordered = [items[i] for i in sorted(items, key=int)]
        if kind == "list":
            return [_decode(shape.member, item, f"{path}.{label}.{n}")
                    for n, item in enumerate(ordered, 1)]
        entries = {}
        for n, item in enumerate(ordered, 1):
            if not isinstance(item, dict) or "key" not in item:
                raise InvalidParameterValue(f"The parameter {path}.entry.{n}.key is missing.")
            entries[_decode(shape.key, item["key"], f"{path}.entry.{n}.key")] = _decode(
                shape.value, item.get("value", ""), f"{path}.entry.{n}.value")
        return entries
    if not isinstance(node, str):
        raise InvalidParameterValue(f"The parameter {path} must be a single value.")
    return _scalar(kind, node, path)


def _scalar(kind: str, text: str, path: str) -> Any:
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("double", "float"):
            return float(text)
        if kind == "boolean":
            if text not in ("true", "false"):
                raise ValueError(text)
            return text == "true"
        if kind == "timestamp":
            return _parse_time(text)
    except ValueError:
        raise InvalidParameterValue(f"The value {text} for parameter {path} is invalid."
                                    ) from None
    return text


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    moment = _dt.datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()


# -- awsJson, in ----------------------------------------------------------------------------
_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _json_doubles(shape: Shape, value: Any) -> Any:
    """``value`` with the strings botocore sends for non-finite doubles made numbers."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {k: _json_doubles(shape.members[k], v) if k in shape.members else v
                for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_json_doubles(shape.member, item) for item in value]
    if kind in ("double", "float") and isinstance(value, str) and value in _SPECIAL:
        return _SPECIAL[value]
    return value


# -- the query protocol, out ----------------------------------------------------------------
def _document(operation: str, body: str, has_result: bool, request_id: str) -> bytes:
    result = (f"  <{operation}Result>\n{body}  </{operation}Result>\n" if has_result else "")
    return (f'<{operation}Response xmlns="{NAMESPACE}">\n{result}'
            f"  <ResponseMetadata>\n    <RequestId>{escape(request_id)}</RequestId>\n"
            f"  </ResponseMetadata>\n</{operation}Response>\n").encode()


def _xml_members(shape: Shape, value: dict[str, Any], indent: str) -> str:
    out = []
    for name, member in shape.members.items():
        if value.get(name) is None:
            continue
        wire = member.serialization.get("name", name)
        out.append(f"{indent}<{wire}>{_xml(member, value[name], indent)}</{wire}>\n")
    return "".join(out)


def _xml(shape: Shape, value: Any, indent: str) -> str:
    kind = shape.type_name
    inner = indent + "  "
    if kind == "structure":
        return f"\n{_xml_members(shape, value, inner)}{indent}"
    if kind == "list":
        label = shape.member.serialization.get("name", "member")
        items = "".join(f"{inner}<{label}>{_xml(shape.member, item, inner)}</{label}>\n"
                        for item in value)
        return f"\n{items}{indent}" if items else ""
    if kind == "map":
        entries = "".join(
            f"{inner}<entry><key>{_xml(shape.key, k, inner)}</key>"
            f"<value>{_xml(shape.value, v, inner)}</value></entry>\n" for k, v in value.items())
        return f"\n{entries}{indent}" if entries else ""
    if kind == "timestamp":
        moment = _dt.datetime.fromtimestamp(float(value), _dt.timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if kind == "boolean":
        return "true" if value else "false"
    if kind in ("double", "float"):
        return repr(float(value))
    return escape(str(value))
