"""One request to an endpoint, as the runtime API hands it to the control plane, and its answer.

The API parses sagemaker-runtime's rest-json request (path, headers, raw body) into an
:class:`InvokeRequest`; the control plane picks an instance, forwards the request to its
container's ``/invocations`` with the contract's headers, and returns an :class:`InvokeResult`
(or, streaming, an async iterator of chunks). Errors are ``shipyard.errors.InvokeError``s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

#: Headers SageMaker forwards to the container (and nothing else: "SageMaker AI strips all
#: POST headers except those supported by the API").
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"
TARGET_VARIANT_HEADER = "X-Amzn-SageMaker-Target-Variant"
INFERENCE_ID_HEADER = "X-Amzn-SageMaker-Inference-Id"
INVOKED_VARIANT_HEADER = "x-Amzn-Invoked-Production-Variant"

#: SageMaker's limits for InvokeEndpoint (both configurable in Settings).
DEFAULT_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
DEFAULT_INVOKE_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class InvokeRequest:
    endpoint: str
    body: bytes
    content_type: str | None = None
    accept: str | None = None
    custom_attributes: str | None = None
    target_model: str | None = None
    target_variant: str | None = None
    inference_id: str | None = None

    def container_headers(self) -> list[tuple[str, str]]:
        """The headers the container sees, as SageMaker sends them."""
        headers = []
        if self.content_type:
            headers.append(("Content-Type", self.content_type))
        if self.accept:
            headers.append(("Accept", self.accept))
        for name, value in ((CUSTOM_ATTRIBUTES_HEADER, self.custom_attributes),
                            (TARGET_MODEL_HEADER, self.target_model),
                            (INFERENCE_ID_HEADER, self.inference_id)):
            if value:
                headers.append((name, value))
        return headers


@dataclass(frozen=True)
class InvokeResult:
    body: bytes
    content_type: str
    #: The production variant that answered (``x-Amzn-Invoked-Production-Variant``).
    variant: str
    custom_attributes: str | None = None


#: How a callback-driven invocation ends: (result, None) or (None, the error).
InvokeDone = Callable[["InvokeResult | None", "BaseException | None"], None]


@dataclass
class InvokeStream:
    """A streamed answer: headers known up front, then the body's chunks as they come."""

    content_type: str
    variant: str
    chunks: AsyncIterator[bytes]
    custom_attributes: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
