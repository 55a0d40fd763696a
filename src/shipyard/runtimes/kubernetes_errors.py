"""The one boundary between the Kubernetes client's errors and Shipyard's."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from shipyard.errors import (
    ResourceInUse,
    ResourceNotFound,
    RuntimeUnavailable,
    ShipyardError,
    ValidationError,
)

__all__ = ["translate_errors"]


@contextlib.contextmanager
def translate_errors(*, name: str | None = None) -> Iterator[None]:
    """Turn the client's errors into Shipyard's (the one boundary with the cluster)."""
    import urllib3.exceptions
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        yield
    except ShipyardError:
        raise
    except ApiException as exc:
        reason = _api_message(exc)
        if exc.status == 404:
            raise ResourceNotFound(f"no such {name or 'object'} in the cluster: {reason}"
                                   ) from exc
        if exc.status == 409:
            raise ResourceInUse(f"{name or 'object'} is in use: {reason}") from exc
        if exc.status in (400, 422):
            raise ValidationError(f"the cluster refused {name or 'the request'}: {reason}"
                                  ) from exc
        raise RuntimeUnavailable(f"the Kubernetes API refused ({exc.status}): {reason}"
                                 ) from exc
    except ConfigException as exc:
        raise RuntimeUnavailable(f"no Kubernetes configuration: {exc}") from exc
    except ValueError as exc:
        # The client's models (pydantic) refusing an answer of another API version.
        raise RuntimeUnavailable(f"the Kubernetes API answered what the client cannot "
                                 f"read: {exc}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise RuntimeUnavailable(f"cannot reach the Kubernetes API: {exc}") from exc


def _api_message(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
