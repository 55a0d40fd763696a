"""SageMaker and CloudWatch Logs requests checked against botocore's own service models.

AWS checks every request against its service model before an operation runs; botocore's
client repeats only part of that (``required``, types, ``min``: ``botocore/validate.py``), so
max lengths, patterns, enums and ranges must be checked server-side (platform-api.md 3.1,
6.3). Nothing is hand-written: the shapes come from
``botocore.session.get_session().get_service_model(service)``, loaded once per process on
first use and compiled, one shape at a time, into small checking closures.

This is the first step of the control plane's door (:func:`check_request`): each create
checks its request here, then only what the model cannot say (``control.jobspec`` and the
kinds' ``validate``). The API checks the operations the plane does not (``api.validation``).

What AWS answers, and how this module mirrors it (sources in docs/api-validation.md):

* constraint failures -> ``ValidationException`` (CloudWatch Logs: ``InvalidParameterException``)
  ``N validation error(s) detected: Value 'v' at 'path' failed to satisfy constraint: C; ...``;
  paths are camelCase member names, list items ``name.1.member.field`` (1-based);
  a list of scalars or a map is reported once, at its own path, with every rule of its
  items: ``Member must satisfy constraint: [...]``, ``Map keys must satisfy constraint: [...]``,
  ``Map value must satisfy constraint: [...]``; a sensitive member's value is not echoed;
* a JSON type that cannot be read as the modelled one -> ``SerializationException`` naming
  the JSON token (``STRING_VALUE can not be converted to an Integer``), before any
  constraint is looked at;
* null members and unknown members are the same as absent ones.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import math
import re
import threading
import unicodedata
import warnings
from collections.abc import Callable, Collection
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from shipyard.errors import (
    InvalidParameter,
    SerializationError,
    ShipyardError,
    UnknownOperation,
    ValidationError,
)

if TYPE_CHECKING:  # botocore loads lazily, on the first request
    from botocore.model import OperationModel, ServiceModel, Shape

__all__ = [
    "check_request",
    "compile_java_pattern",
    "operation_model",
    "skipped_patterns",
    "validate",
]

#: Scalar shapes return the texts of the rules a value breaks; containers append whole messages.
ScalarCheck = Callable[[Any], list[str]]
Check = Callable[[Any, str, list[str]], None]

_EPOCH_RANGE = (-62135596800, 253402300799)
_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_JAVA_TYPE = {
    "string": "a String", "integer": "an Integer", "long": "a Long", "boolean": "a Boolean",
    "float": "a Float", "double": "a Double", "timestamp": "a Timestamp", "blob": "a Blob",
}
# SageMaker quotes its own copy of a pattern, where some carry anchors that botocore >= 1.35
# strips (``^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`` in AWS's messages and API reference, no ``^`` in
# botocore 1.44). Display only, for the shapes of the operations Shipyard serves whose pattern
# differs from botocore 1.34's by its anchors alone: shape -> (prefix, suffix).
_QUOTED_ANCHORS: dict[str, dict[str, tuple[str, str]]] = {"sagemaker": {
    "TrainingJobName": ("^", ""), "ProcessingJobName": ("^", ""),
    "ExperimentEntityName": ("^", ""), "FeatureGroupName": ("^", ""),
    "ArnOrName": ("", "$"), "RoleArn": ("^", "$"), "S3Uri": ("^", "$"),
    "FileSystemId": ("^", "$"), "TagKey": ("^", "$"), "TagValue": ("^", "$"),
    # models, endpoint configs, endpoints, transform jobs
    "ModelName": ("^", ""), "EndpointName": ("^", ""), "EndpointConfigName": ("^", ""),
    "TransformJobName": ("^", ""), "VariantName": ("^", ""), "ContainerHostname": ("^", ""),
    "InferenceSpecificationName": ("^", "$"), "Url": ("^", "$"), "S3ModelUri": ("^", "$"),
    "DestinationS3Uri": ("^", "$"), "AlarmName": ("^", ""), "ClarifyMimeType": ("^", ""),
    "CsvContentType": ("^", ""), "JsonContentType": ("^", ""),
}}
# Shipyard's one widening of AWS's rules: data and output locations may also be local
# (``file://`` URIs or absolute paths, read by control.jobspec and control.artifacts).
# Model artefacts likewise (``ModelDataUrl`` is a ``Url``; ``ModelDataSource`` an S3ModelUri).
_EXTENSION_PREFIXES: dict[str, dict[str, tuple[str, ...]]] = {"sagemaker": {
    "S3Uri": ("file://", "/"),
    "Url": ("file://", "/"),
    "S3ModelUri": ("file://", "/"),
}}
# ...and, as SDK v2's local mode does, jobs and endpoints may run on the ``local`` instance
# types (no limits).
_EXTENSION_ENUM_VALUES: dict[str, dict[str, tuple[str, ...]]] = {"sagemaker": {
    "TrainingInstanceType": ("local", "local_gpu"),
    "ProcessingInstanceType": ("local", "local_gpu"),
    "ProductionVariantInstanceType": ("local", "local_gpu"),
    "TransformInstanceType": ("local", "local_gpu"),
}}
# CloudWatch Logs reports constraint failures under its own modelled code.
_ERROR_CLASS: dict[str, type[ShipyardError]] = {"logs": InvalidParameter}

_lock = threading.RLock()
_skipped: dict[str, str] = {}


# ---------------------------------------------------------------- public surface


def check_request(operation: str, request: Any) -> dict[str, Any]:
    """A SageMaker ``operation``'s request as the control plane's door takes it: checked
    against botocore's model (AWS's messages, :func:`validate`), and returned as a deep copy
    without its null members, which AWS reads as absent (as ``api.validation`` parses them).
    """
    if not isinstance(request, dict):
        # Only a Python caller can get here: a body that is not an object is refused earlier.
        raise ValidationError(f"{operation} request must be a JSON object, not "
                              f"{type(request).__name__}")
    validate("sagemaker", operation, request)
    copied: dict[str, Any] = _without_nulls(request)
    return copied


def operation_model(service: str, operation: str) -> OperationModel:
    """botocore's model of ``service``'s ``operation`` (exact, case-sensitive name).

    An operation the service does not have -> ``UnknownOperationException`` with an empty
    message, as AWS answers an unknown ``X-Amz-Target``.
    """
    model = _service_model(service)
    if model is None or operation not in _operation_names(service):
        raise UnknownOperation("")
    return model.operation_model(operation)


def validate(service: str, operation: str, params: dict[str, Any], *,
             only: Collection[str] | None = None) -> None:
    """Check ``params`` against the operation's input shape; every broken rule is reported.

    ``only``: check just these top-level members, as in the whole request (the others are
    checked where they are used). Raises ``UnknownOperation``, ``SerializationError`` (a value
    of the wrong JSON type) or the service's validation error (``ValidationError``;
    ``InvalidParameter`` for logs).
    """
    check = _input_check(service, operation, None if only is None else frozenset(only))
    if not isinstance(params, dict):
        raise SerializationError(_type_message(params, "structure"))
    errors: list[str] = []
    try:
        check(params, "", errors)
    except RecursionError as exc:
        raise SerializationError("") from exc
    if errors:
        count = len(errors)
        error_class = _ERROR_CLASS.get(service, ValidationError)
        raise error_class(f"{count} validation error{'' if count == 1 else 's'} detected: "
                          + "; ".join(errors))


def skipped_patterns() -> dict[str, str]:
    """Model patterns met so far that Python's ``re`` cannot run, with the reason: unchecked."""
    return dict(_skipped)


# ---------------------------------------------------------------- models


@cache
def _session() -> Any:
    import botocore.session

    return botocore.session.get_session()


def _service_model(service: str) -> ServiceModel | None:
    with _lock:
        return _load_service_model(service)


@cache
def _load_service_model(service: str) -> ServiceModel | None:
    from botocore.exceptions import BotoCoreError

    try:
        return _session().get_service_model(service)
    except BotoCoreError:  # UnknownServiceError, DataNotFoundError: no such service
        return None


@cache
def _operation_names(service: str) -> frozenset[str]:
    model = _service_model(service)
    return frozenset(model.operation_names) if model is not None else frozenset()


@cache
def _input_check(service: str, operation: str, only: frozenset[str] | None) -> Check:
    op = operation_model(service, operation)
    if op.input_shape is None:
        return _accept
    with _lock:
        compiler = _Compiler.for_service(service)
        if only is None:
            return compiler.check(op.input_shape)
        return compiler._structure(op.input_shape, only)


def _accept(value: Any, path: str, errors: list[str]) -> None:
    return None


# ---------------------------------------------------------------- shape compiler


class _Compiler:
    """Turns botocore shapes into checking closures, once per shape name and service."""

    _instances: ClassVar[dict[str, _Compiler]] = {}

    @classmethod
    def for_service(cls, service: str) -> _Compiler:
        if service not in cls._instances:
            cls._instances[service] = cls(service)
        return cls._instances[service]

    def __init__(self, service: str) -> None:
        self.anchors = _QUOTED_ANCHORS.get(service, {})
        self.extensions = _EXTENSION_PREFIXES.get(service, {})
        self.extra_enum_values = _EXTENSION_ENUM_VALUES.get(service, {})
        self.checks: dict[str, Check] = {}
        self.scalars: dict[str, tuple[ScalarCheck, str]] = {}

    def check(self, shape: Shape) -> Check:
        """A closure appending AWS's messages for ``shape`` to ``errors``."""
        if shape.name in self.checks:
            return self.checks[shape.name]
        kind = shape.type_name
        if kind == "structure" and shape.metadata.get("document"):
            # Documents hold any JSON; nothing in them is modelled.
            built: Check = _accept
        elif kind == "structure":
            # Recursive shapes (SearchExpression...) reach themselves: route through a cell.
            cell: list[Check] = []
            self.checks[shape.name] = lambda v, p, e: cell[0](v, p, e)
            built = self._structure(shape)
            cell.append(built)
        elif kind == "list":
            built = self._list(shape)
        elif kind == "map":
            built = self._map(shape)
        else:
            built = self._member_scalar(shape)
        self.checks[shape.name] = built
        return built

    def scalar(self, shape: Shape) -> tuple[ScalarCheck, str]:
        """``(rules broken by a value, "[every rule]")`` for a scalar shape."""
        if shape.name not in self.scalars:
            self.scalars[shape.name] = _scalar(shape, self.anchors.get(shape.name, ("", "")),
                                               self.extensions.get(shape.name, ()),
                                               self.extra_enum_values.get(shape.name, ()))
        return self.scalars[shape.name]

    def _member_scalar(self, shape: Shape) -> Check:
        broken, _ = self.scalar(shape)
        sensitive = bool(shape.metadata.get("sensitive"))
        lowest, highest = _INT_RANGE.get(shape.type_name, (None, None))

        def check(value: Any, path: str, errors: list[str]) -> None:
            rules = broken(value)
            if rules:
                # A number past its Java type is not echoed (measured on Athena's MaxResults).
                hidden = sensitive or (lowest is not None and not lowest <= value <= highest)
                for rule in rules:
                    errors.append(_message(value, path, rule, hidden))

        return check

    def _structure(self, shape: Shape, only: frozenset[str] | None = None) -> Check:
        required = frozenset(shape.required_members)
        members = [(name, _camel(name), self.check(member), name in required)
                   for name, member in shape.members.items() if only is None or name in only]

        def check(value: Any, path: str, errors: list[str]) -> None:
            if not isinstance(value, dict):
                raise SerializationError(_type_message(value, "structure"))
            prefix = f"{path}." if path else ""
            for name, camel, member_check, is_required in members:
                item = value.get(name)
                if item is None:
                    if is_required:
                        errors.append(f"Value null at '{prefix}{camel}' failed to satisfy "
                                      "constraint: Member must not be null")
                    continue
                member_check(item, prefix + camel, errors)

        return check

    def _list(self, shape: Shape) -> Check:
        size = _size_rules(shape)
        member = shape.member
        if member.type_name in ("structure", "list", "map"):
            item_check = self.check(member)

            def check_items(items: list[Any], path: str, errors: list[str]) -> None:
                for index, item in enumerate(items, 1):
                    item_path = f"{path}.{index}.member"
                    if item is None:
                        errors.append(_null_item(item_path))
                    else:
                        item_check(item, item_path, errors)
        else:
            broken, rules = self.scalar(member)

            def check_items(items: list[Any], path: str, errors: list[str]) -> None:
                bad = False
                for index, item in enumerate(items, 1):
                    if item is None:
                        errors.append(_null_item(f"{path}.{index}.member"))
                    elif broken(item):
                        bad = True
                if bad:
                    errors.append(_message(items, path, f"Member must satisfy constraint: {rules}"))

        def check(value: Any, path: str, errors: list[str]) -> None:
            if not isinstance(value, list):
                raise SerializationError(_type_message(value, "list"))
            for rule in size(len(value)):
                errors.append(_message(value, path, rule))
            check_items(value, path, errors)

        return check

    def _map(self, shape: Shape) -> Check:
        size = _size_rules(shape)
        key_broken, key_rules = self.scalar(shape.key)
        value_shape = shape.value
        scalar_values = value_shape.type_name not in ("structure", "list", "map")
        if scalar_values:
            value_broken, value_rules = self.scalar(value_shape)
        else:
            value_check = self.check(value_shape)

        def check(value: Any, path: str, errors: list[str]) -> None:
            if not isinstance(value, dict):
                raise SerializationError(_type_message(value, "map"))
            for rule in size(len(value)):
                errors.append(_message(value, path, rule))
            bad_key = bad_value = False
            for key, item in value.items():
                if not isinstance(key, str):
                    raise SerializationError(_type_message(key, "string"))
                bad_key = bool(key_broken(key)) or bad_key
                if item is None:
                    errors.append(_null_item(f"{path}.{key}"))
                elif scalar_values:
                    bad_value = bool(value_broken(item)) or bad_value
                else:
                    value_check(item, f"{path}.{key}", errors)
            # However many entries break them, AWS names the key rules once, then the value rules.
            if bad_key:
                errors.append(_message(value, path,
                                       f"Map keys must satisfy constraint: {key_rules}"))
            if bad_value:
                errors.append(_message(value, path,
                                       f"Map value must satisfy constraint: {value_rules}"))

        return check


def _size_rules(shape: Shape) -> Callable[[int], list[str]]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    return lambda size: _length_rules(size, low, high)


def _scalar(shape: Shape, anchors: tuple[str, str],
            also_accepted: tuple[str, ...] = (),
            extra_enum_values: tuple[str, ...] = ()) -> tuple[ScalarCheck, str]:
    """Rules of a string, number, boolean, timestamp or blob shape, in AWS's order.

    ``also_accepted``: prefixes that satisfy the pattern too (Shipyard's local locations);
    ``extra_enum_values``: values accepted beside the enum (not shown in its message).
    """
    kind, meta = shape.type_name, shape.metadata
    low, high = meta.get("min"), meta.get("max")
    rules: list[str] = []
    if kind in ("string", "blob"):
        if high is not None:
            rules.append(f"Member must have length less than or equal to {high}")
        if low is not None:
            rules.append(f"Member must have length greater than or equal to {low}")
    elif kind in ("integer", "long", "float", "double"):
        if high is not None:
            rules.append(f"Member must have value less than or equal to {_show(high)}")
        if low is not None:
            rules.append(f"Member must have value greater than or equal to {_show(low)}")
    pattern_text = meta.get("pattern") if kind == "string" else None
    pattern = compile_java_pattern(pattern_text) if pattern_text is not None else None
    # Past this length a pattern is not run: some of AWS's patterns backtrack polynomially, and a
    # value that long already breaks the length rule (AWS would name both).
    pattern_limit = 4 * high if high is not None else _UNBOUNDED_PATTERN_LIMIT
    if pattern_text is not None:
        shown = anchors[0] + pattern_text + anchors[1]
        pattern_rule = f"Member must satisfy regular expression pattern: {shown}"
        rules.append(pattern_rule)
    enum = (frozenset(shape.enum) | frozenset(extra_enum_values)
            if kind == "string" and shape.enum else None)
    if enum is not None:
        enum_rule = f"Member must satisfy enum value set: [{', '.join(shape.enum)}]"
        rules.append(enum_rule)
    listing = f"[{', '.join(rules)}]"

    if kind == "string":
        def broken(value: Any) -> list[str]:
            if not isinstance(value, str):
                raise SerializationError(_type_message(value, kind))
            size = len(value)
            out = _length_rules(size, low, high)
            if (pattern is not None and size <= pattern_limit and pattern.fullmatch(value) is None
                    and not (also_accepted and value.startswith(also_accepted))):
                out.append(pattern_rule)
            if enum is not None and value not in enum:
                out.append(enum_rule)
            return out
    elif kind in ("integer", "long"):
        lowest, highest = _INT_RANGE[kind]

        def broken(value: Any) -> list[str]:
            # AWS truncates a fractional number here; refusing it keeps handlers on ints.
            if not isinstance(value, int) or isinstance(value, bool):
                raise SerializationError(_type_message(value, kind))
            out = _value_rules(value, low, high)
            if not out and not lowest <= value <= highest:
                raise SerializationError(_type_message(value, kind))
            return out
    elif kind in ("float", "double"):
        def broken(value: Any) -> list[str]:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise SerializationError(_type_message(value, kind))
            if isinstance(value, float) and not math.isfinite(value):
                raise SerializationError("")  # JSON has no NaN or Infinity: a malformed body
            return _value_rules(value, low, high)
    elif kind == "boolean":
        def broken(value: Any) -> list[str]:
            if not isinstance(value, bool):
                raise SerializationError(_type_message(value, kind))
            return []
    elif kind == "timestamp":
        def broken(value: Any) -> list[str]:
            if not _is_timestamp(value):
                raise SerializationError(_type_message(value, kind))
            return []
    elif kind == "blob":
        def broken(value: Any) -> list[str]:
            return _length_rules(_blob_size(value), low, high)
    else:  # a type this module does not know yet: let it through rather than guess
        def broken(value: Any) -> list[str]:
            return []
    return broken, listing


def _length_rules(size: int, low: int | None, high: int | None) -> list[str]:
    out = []
    if high is not None and size > high:
        out.append(f"Member must have length less than or equal to {high}")
    if low is not None and size < low:
        out.append(f"Member must have length greater than or equal to {low}")
    return out


def _value_rules(value: float, low: float | None, high: float | None) -> list[str]:
    out = []
    if high is not None and not value <= high:
        out.append(f"Member must have value less than or equal to {_show(high)}")
    if low is not None and not value >= low:
        out.append(f"Member must have value greater than or equal to {_show(low)}")
    return out


def _is_timestamp(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        # Epoch seconds within what a date can hold (years 1-9999), as Java's Date parses them.
        return _EPOCH_RANGE[0] <= value <= _EPOCH_RANGE[1]
    if isinstance(value, str):
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            _dt.datetime.fromisoformat(text)
        except ValueError:
            return False
        return True
    return False


def _blob_size(value: Any) -> int:
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if not isinstance(value, str):
        raise SerializationError(_type_message(value, "blob"))
    try:
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise SerializationError(f"'{value}' can not be converted to a Blob") from exc


# ---------------------------------------------------------------- messages


def _message(value: Any, path: str, rule: str, sensitive: bool = False) -> str:
    shown = "" if sensitive else f" '{_show(value)}'"
    return f"Value{shown} at '{path}' failed to satisfy constraint: {rule}"


def _null_item(path: str) -> str:
    return f"Value null at '{path}' failed to satisfy constraint: Member must not be null"


def _camel(name: str) -> str:
    # AWS lowers only the first letter: SAMLOptions -> sAMLOptions, S3Uri -> s3Uri.
    return name[:1].lower() + name[1:]


def _show(value: Any) -> str:
    """A value as Java's ``toString`` prints it: ``[a, b]``, ``{k=v}``, ``true``, ``1.0E-5``."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        # Past Python's int-to-text limit (4300 digits) str() raises; no AWS value is that big.
        return str(value) if value.bit_length() < 14000 else f"<{value.bit_length()}-bit integer>"
    if isinstance(value, float):
        return _java_double(value)
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_show(k)}={_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _java_double(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0 or 1e-3 <= abs(value) < 1e7:
        return repr(value)  # positional in this range, with Java's shortest digits
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    mantissa = f"{digits[0]}." + ("".join(map(str, digits[1:])) or "0")
    return f"{'-' if sign else ''}{mantissa}E{len(digits) - 1 + exponent}"


def _type_message(value: Any, kind: str) -> str:
    """What Coral says when a JSON value cannot be read as ``kind``."""
    if isinstance(value, list):
        return "Start of list found where not expected"
    if isinstance(value, dict):
        return "Start of structure or map found where not expected."
    if kind == "list":
        return "Expected list or null"
    if kind == "map":
        return "Expected map or null"
    if kind == "structure":
        return "Expected null"
    if isinstance(value, bool):
        token = "TRUE_VALUE" if value else "FALSE_VALUE"
    elif isinstance(value, (int, float)):
        token = "NUMBER_VALUE"
    elif isinstance(value, str):
        token = "STRING_VALUE"
    else:
        return ""
    return f"{token} can not be converted to {_JAVA_TYPE.get(kind, 'a ' + kind.title())}"


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


# ---------------------------------------------------------------- Java regexes in Python


_JAVA_DOT = "[^\\n\\r\\u0085\\u2028\\u2029]"
_POSIX = {
    "Alnum": "a-zA-Z0-9", "Alpha": "a-zA-Z", "Digit": "0-9", "Upper": "A-Z", "Lower": "a-z",
    "XDigit": "0-9a-fA-F", "Space": " \\t\\n\\x0b\\f\\r", "Punct": re.escape(
        "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
}
_SHORTHAND = frozenset("wWdDsS")


# Patterns whose nested quantifiers over overlapping classes backtrack exponentially in Python's
# (and Java's) engine: 24 characters take half a second. None is in an operation Shipyard serves.
_BACKTRACKING = frozenset({"[a-z0-9]([-a-z0-9]*[a-z0-9]){0,39}?"})
_UNBOUNDED_PATTERN_LIMIT = 1 << 16


@cache
def compile_java_pattern(pattern: str) -> re.Pattern[str] | None:
    """AWS's (Java) regex as a Python pattern for ``fullmatch``; None where ``re`` cannot.

    Translates what differs: ``.`` stops at every Java line terminator, ``\\p{L}``-style
    Unicode categories and POSIX classes become explicit ranges, surrogate-pair escapes
    become code points, ``-`` after ``\\w`` in a class is literal; ``\\w``, ``\\d``, ``\\s`` stay
    ASCII as in Java. Patterns that still do not compile are recorded in
    :func:`skipped_patterns` and not checked.
    """
    if pattern in _BACKTRACKING:
        _skipped[pattern] = "exponential backtracking"
        return None
    try:
        translated = _translate(pattern)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "possible nested set" and similar: Java semantics
            return re.compile(translated, re.ASCII)
    except (re.error, ValueError, FutureWarning, DeprecationWarning) as exc:
        _skipped[pattern] = str(exc)
        return None


def _translate(pattern: str) -> str:
    out: list[str] = []
    in_class = False
    class_start = False
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\" and i + 1 < n:
            escape = pattern[i + 1]
            if escape in "pP":
                text, i = _property(pattern, i, in_class)
                out.append(text)
            elif escape == "u" and re.match(r"[0-9a-fA-F]{4}", pattern[i + 2:i + 6]):
                unit = int(pattern[i + 2:i + 6], 16)
                low = re.match(r"\\u([dD][c-fC-F][0-9a-fA-F]{2})", pattern[i + 6:i + 12])
                if 0xD800 <= unit <= 0xDBFF and low:
                    point = 0x10000 + ((unit - 0xD800) << 10) + (int(low.group(1), 16) - 0xDC00)
                    out.append(f"\\U{point:08x}")
                    i += 12
                else:
                    out.append(f"\\u{unit:04x}")
                    i += 6
            elif escape == "Q":
                end = pattern.find("\\E", i + 2)
                end = n if end < 0 else end
                out.append(re.escape(pattern[i + 2:end]))
                i = end + 2
            elif escape in "zZ" and not in_class:
                out.append("\\Z" if escape == "z" else "(?=\\n?\\Z)")
                i += 2
            else:
                out.append(pattern[i:i + 2])
                i += 2
                if in_class and escape in _SHORTHAND and pattern[i:i + 1] == "-" and (
                        pattern[i + 1:i + 2] not in ("]", "")):
                    out.append("\\-")  # Java reads "[\w-_]" as \w, '-', '_'
                    i += 1
            class_start = False
            continue
        if in_class:
            if char == "[" or (char == "&" and pattern[i + 1:i + 2] == "&"):
                raise ValueError("nested classes and intersections are Java-only")
            if char == "]" and not class_start:
                in_class = False
            class_start = class_start and char == "^"
            out.append(char)
        elif char == "[":
            in_class = class_start = True
            out.append(char)
        elif char == ".":
            out.append(_JAVA_DOT)
        elif char == "$" and (quantifier := re.match(r"\{\d+(,\d*)?\}", pattern[i + 1:])):
            out.append(char)  # Java accepts "$" repeated ("...)${1,256}"): still just "$"
            i += quantifier.end()
        else:
            out.append(char)
        i += 1
    return "".join(out)


def _property(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    negated = pattern[i + 1] == "P"
    if pattern[i + 2:i + 3] == "{":
        end = pattern.index("}", i + 3)
        name, nxt = pattern[i + 3:end], end + 1
    else:
        name, nxt = pattern[i + 2:i + 3], i + 3
    name = name.removeprefix("Is")
    body = _POSIX.get(name) or _categories(name)
    if negated and in_class:
        raise ValueError(f"\\P{{{name}}} inside a class")
    if in_class:
        return body, nxt
    return (f"[^{body}]" if negated else f"[{body}]"), nxt


@cache
def _categories(name: str) -> str:
    """A Unicode general category (``L``, ``Lu``, ``N``...) as an ``re`` class body."""
    if not re.fullmatch(r"[LMNPSZC][a-z]?", name):
        raise ValueError(f"unsupported property \\p{{{name}}}")
    return "".join(f"\\U{start:08x}" if start == end else f"\\U{start:08x}-\\U{end:08x}"
                   for start, end, category in _category_runs() if category.startswith(name))


@cache
def _category_runs() -> list[tuple[int, int, str]]:
    """Runs of code points sharing a general category (one scan, ~0.1 s, on first need)."""
    runs: list[tuple[int, int, str]] = []
    category = unicodedata.category
    # Planes 4-13 hold no assigned characters, 15-16 only private use: whole runs of Cn / Co.
    spans = ((0, 0x3FFFF, None), (0x40000, 0xDFFFF, "Cn"), (0xE0000, 0xEFFFF, None),
             (0xF0000, 0x10FFFF, "Co"))
    for low, high, fixed in spans:
        if fixed is not None:
            runs.append((low, high, fixed))
            continue
        start, current = low, category(chr(low))
        for point in range(low + 1, high + 1):
            here = category(chr(point))
            if here != current:
                runs.append((start, point - 1, current))
                start, current = point, here
        runs.append((start, high, current))
    return runs
