"""Shipyard's errors: one root, each class carrying its SageMaker wire mapping.

    ShipyardError                      InternalFailure        500
     ├── ValidationError               ValidationException    400  bad request, before anything runs
     │    ├── UnsafeArchiveError                                    a tar member escapes
     │    └── DataSourceError                                      input data missing or unreadable
     ├── ResourceNotFound              ResourceNotFound       400
     ├── ResourceInUse                 ResourceInUse          400  duplicate name, wrong state
     ├── ResourceLimitExceeded         ResourceLimitExceeded  400
     ├── Conflict                      ConflictException      400  the registry's state forbids it
     ├── ImageNotFound                 ValidationException    400  the image is not in the engine
     ├── RuntimeUnavailable            InternalFailure        500  no container engine / it failed
     ├── StorageError                  InternalFailure        500  writing artifacts or state failed
     ├── ObjectStoreUnavailable        InternalFailure        500  the server's S3 store cannot run
     ├── ApiError                                                 wire-level request errors
     │    ├── UnknownOperation          UnknownOperationException 400
     │    ├── SerializationError        SerializationException    400  body is not valid JSON
     │    ├── AuthError                 (see subclasses)          403
     │    │    ├── MissingAuthentication  MissingAuthenticationTokenException
     │    │    ├── IncompleteSignature    IncompleteSignatureException 400
     │    │    ├── InvalidSignature       InvalidSignatureException
     │    │    └── UnrecognizedClient     UnrecognizedClientException  unknown access key
     │    ├── LogsResourceNotFound      ResourceNotFoundException 400  CloudWatch Logs' not-found
     │    └── InvalidParameter          InvalidParameterException 400  CloudWatch Logs' bad input
     ├── InvokeError                   (sagemaker-runtime's own codes)
     │    ├── InvokeValidationError     ValidationError        400  no such endpoint, bad payload
     │    ├── ModelError                ModelError             424  the container answered an error
     │    ├── ModelNotReady             ModelNotReadyException 429  no instance is ready yet
     │    └── ServiceUnavailable        ServiceUnavailable     503  no instance can take it now
     └── ToolkitError                                              failures inside the image
          ├── EntryPointError                                      no or bad user entry point
          └── InstallError                                         requirements.txt failed

Third-party exceptions (Docker SDK, sqlite3, botocore) are translated into these at one
boundary per adapter (`runtimes.docker`, `control.store`, `control.s3`), with ``raise ... from``.
Every subclass registers itself by its ``code`` so the API can rebuild an error from the wire.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ApiError",
    "AuthError",
    "Conflict",
    "DataSourceError",
    "EntryPointError",
    "ImageNotFound",
    "IncompleteSignature",
    "InstallError",
    "InvalidParameter",
    "InvalidSignature",
    "InvokeError",
    "InvokeValidationError",
    "LogsResourceNotFound",
    "MissingAuthentication",
    "ModelError",
    "ModelNotReady",
    "ObjectStoreUnavailable",
    "ResourceInUse",
    "ResourceLimitExceeded",
    "ResourceNotFound",
    "RuntimeUnavailable",
    "SerializationError",
    "ServiceUnavailable",
    "ShipyardError",
    "StorageError",
    "ToolkitError",
    "UnknownOperation",
    "UnrecognizedClient",
    "UnsafeArchiveError",
    "ValidationError",
    "error_class_for_code",
]

_BY_CODE: dict[str, type[ShipyardError]] = {}


class ShipyardError(Exception):
    """Root of every error Shipyard raises on purpose."""

    code: ClassVar[str] = "InternalFailure"
    http_status: ClassVar[int] = 500

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # The first class declaring a code owns it, so the wire maps back to the broadest class.
        if "code" in cls.__dict__:
            _BY_CODE.setdefault(cls.code, cls)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ValidationError(ShipyardError):
    code = "ValidationException"
    http_status = 400


class UnsafeArchiveError(ValidationError):
    """A tar member with an absolute path, ``..``, or a link pointing outside its folder."""


class DataSourceError(ValidationError):
    """Input data that does not exist or cannot be read."""


class ResourceNotFound(ShipyardError):
    code = "ResourceNotFound"
    http_status = 400


class ResourceInUse(ShipyardError):
    code = "ResourceInUse"
    http_status = 400


class ResourceLimitExceeded(ShipyardError):
    code = "ResourceLimitExceeded"
    http_status = 400


class Conflict(ShipyardError):
    """SageMaker's ``ConflictException``: the registry's state forbids the change (a model
    package group that still holds versions, a group being deleted)."""

    code = "ConflictException"
    http_status = 400


class ImageNotFound(ValidationError):
    """The image named by a job is not present in the container engine."""


class RuntimeUnavailable(ShipyardError):
    """The container engine cannot be reached or refused an operation."""


class StorageError(ShipyardError):
    """State or artifacts could not be read or written."""


class ObjectStoreUnavailable(ShipyardError):
    """The S3 store the server runs for its data directory cannot start (its binary is
    missing, its port is taken); the message names the setting that fixes it."""


class ApiError(ShipyardError):
    """Errors of the HTTP face itself (routing, parsing, authentication)."""

    code = "InternalFailure"
    http_status = 500


class UnknownOperation(ApiError):
    code = "UnknownOperationException"
    http_status = 400


class SerializationError(ApiError):
    code = "SerializationException"
    http_status = 400


class AuthError(ApiError):
    code = "AccessDeniedException"
    http_status = 403


class MissingAuthentication(AuthError):
    code = "MissingAuthenticationTokenException"
    http_status = 403


class IncompleteSignature(AuthError):
    code = "IncompleteSignatureException"
    http_status = 400


class InvalidSignature(AuthError):
    code = "InvalidSignatureException"
    http_status = 403


class UnrecognizedClient(AuthError):
    code = "UnrecognizedClientException"
    http_status = 403


class LogsResourceNotFound(ApiError):
    code = "ResourceNotFoundException"
    http_status = 400


class InvalidParameter(ApiError):
    code = "InvalidParameterException"
    http_status = 400


class InvokeError(ShipyardError):
    """Errors of the runtime API (InvokeEndpoint): rest-json, codes from its own model."""


class InvokeValidationError(InvokeError):
    # sagemaker-runtime spells its validation error without the "Exception" suffix.
    code = "ValidationError"
    http_status = 400


class ModelError(InvokeError):
    """The container answered with an error status (or none): SageMaker's 424 ModelError."""

    code = "ModelError"
    http_status = 424

    def __init__(self, message: str, *, original_status_code: int = 0,
                 original_message: str = "", log_stream_arn: str = "") -> None:
        super().__init__(message)
        self.original_status_code = original_status_code
        self.original_message = original_message
        self.log_stream_arn = log_stream_arn


class ModelNotReady(InvokeError):
    code = "ModelNotReadyException"
    http_status = 429


class ServiceUnavailable(InvokeError):
    code = "ServiceUnavailable"
    http_status = 503


class ToolkitError(ShipyardError):
    """A failure inside the container, reported through /opt/ml/output/failure."""


class EntryPointError(ToolkitError):
    pass


class InstallError(ToolkitError):
    pass


_BY_CODE.setdefault(ShipyardError.code, ShipyardError)


def error_class_for_code(code: str) -> type[ShipyardError]:
    """The error class for a SageMaker error code; the root for codes we do not know."""
    return _BY_CODE.get(code, ShipyardError)
