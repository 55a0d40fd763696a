"""Errors raised while serving a request, each carrying the HTTP status SageMaker clients see.

sagemaker-containers answers 415 for an unsupported request content type and 406 for an
unsupported Accept; the inference toolkit's ``GenericInferenceToolkitError(status, message)``
lets user code pick any status. Both are honoured: our classes carry ``status_code``, and any
user exception with an integer ``status_code`` attribute keeps it (see :func:`status_of`).
"""

from __future__ import annotations

from typing import ClassVar

from shipyard.errors import ToolkitError


class RequestError(ToolkitError):
    """A request the server refuses; ``status_code`` is the HTTP status to answer."""

    status_code: ClassVar[int] = 400


class BadRequest(RequestError):
    """The body cannot be decoded as its declared content type (400)."""

    status_code = 400


class UnsupportedContentType(RequestError):
    """No decoder for the request's Content-Type (415)."""

    status_code = 415


class NotAcceptable(RequestError):
    """No encoder for any type the Accept header allows (406)."""

    status_code = 406


class PayloadTooLarge(RequestError):
    """The body exceeds ``SAGEMAKER_MAX_PAYLOAD_IN_MB`` (413)."""

    status_code = 413


class MissingDependency(RequestError):
    """A codec needs numpy and it is not installed (500: the image, not the client, is at fault)."""

    status_code = 500


def status_of(exc: BaseException) -> int:
    """The HTTP status for an exception: its own ``status_code`` if it is a valid one, else 500."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status <= 599:
        return status
    return 500
