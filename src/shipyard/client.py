"""A client of a Shipyard server: the SageMaker and sagemaker-runtime APIs through boto3, as any
user would call them.

The CLI is built on this. botocore errors are translated into Shipyard's error tree here, at
one boundary, by the error code the server sent.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shipyard import kinds
from shipyard.errors import (
    ModelError,
    RuntimeUnavailable,
    ShipyardError,
    ValidationError,
    error_class_for_code,
)
from shipyard.settings import Settings

#: Time the server may take beyond its own invoke timeout before the client gives up.
INVOKE_READ_MARGIN_SECONDS = 10.0


@dataclass(frozen=True)
class LogLine:
    stream: str
    timestamp_ms: int
    message: str


@dataclass(frozen=True)
class Invocation:
    """What InvokeEndpoint answered (for a stream, everything but the body)."""

    content_type: str
    variant: str
    custom_attributes: str | None = None
    body: bytes = b""
    chunks: Iterator[bytes] = field(default_factory=lambda: iter(()))


@contextlib.contextmanager
def _translate() -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

    try:
        yield
    except ParamValidationError as exc:
        # botocore refused the request before sending it: the caller's input, not the server.
        raise ValidationError(str(exc)) from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        raise error_class_for_code(code)(str(error.get("Message", "")) or code) from exc
    except BotoCoreError as exc:
        raise RuntimeUnavailable(f"cannot reach the Shipyard server: {exc}") from exc


class Client:
    def __init__(self, url: str, access_key_id: str, secret_access_key: str,
                 region: str = "us-east-1", invoke_timeout: float = 60.0) -> None:
        import boto3
        from botocore.config import Config

        self.url = url
        self._credentials = (access_key_id, secret_access_key)
        self.region = region
        session = boto3.session.Session(aws_access_key_id=access_key_id,
                                        aws_secret_access_key=secret_access_key,
                                        region_name=region)
        config = Config(retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=5, read_timeout=60)
        self.sagemaker = session.client("sagemaker", endpoint_url=url, config=config)
        self.logs = session.client("logs", endpoint_url=url, config=config)
        # An invocation is not idempotent (the model may have acted on it): it is sent once.
        runtime_config = Config(retries={"total_max_attempts": 1}, connect_timeout=5,
                                read_timeout=invoke_timeout + INVOKE_READ_MARGIN_SECONDS)
        self.runtime = session.client("sagemaker-runtime", endpoint_url=url,
                                      config=runtime_config)

    @classmethod
    def for_settings(cls, settings: Settings) -> Client:
        """A client of this data directory's server, started in the background if needed."""
        from shipyard.api.credentials import load_or_create
        from shipyard.api.server import ensure_server

        info = ensure_server(settings)
        akid, secret = load_or_create(settings.data_dir).default
        return cls(info.url, akid, secret, settings.region, settings.invoke_timeout_seconds)

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One SageMaker operation by its API name (``CreateModel``), errors translated."""
        with _translate():
            response = getattr(self.sagemaker, _snake(operation))(**params)
        response.pop("ResponseMetadata", None)
        return dict(response)

    # -- jobs -------------------------------------------------------------------------------
    def create_job(self, kind: str, request: dict[str, Any]) -> str:
        spec = kinds.get(kind)
        with _translate():
            response = getattr(self.sagemaker, _snake(spec.operation("Create")))(**request)
        return str(response[spec.arn_field])

    def describe(self, kind: str, name: str) -> dict[str, Any]:
        spec = kinds.get(kind)
        with _translate():
            response = getattr(self.sagemaker, _snake(spec.operation("Describe")))(
                **{spec.name_field: name})
        response.pop("ResponseMetadata", None)
        return dict(response)

    def find_kind(self, name: str, kind: str | None = None) -> str | None:
        """Which kind of job ``name`` is (training first), or None."""
        for candidate in [kind] if kind else [k.key for k in kinds.JOBS]:
            try:
                self.describe(candidate, name)
                return candidate
            except ShipyardError as exc:
                if "not found" not in str(exc).lower():
                    raise
        return None

    def stop(self, kind: str, name: str) -> None:
        spec = kinds.get(kind)
        with _translate():
            getattr(self.sagemaker, _snake(spec.operation("Stop")))(**{spec.name_field: name})

    def list_jobs(self, kind: str, *, status: str | None = None, limit: int = 50
             ) -> list[dict[str, Any]]:
        spec = kinds.get(kind)
        params: dict[str, Any] = {"SortBy": "CreationTime", "SortOrder": "Descending"}
        if status:
            params["StatusEquals"] = status
        out: list[dict[str, Any]] = []
        with _translate():
            paginator = self.sagemaker.get_paginator(_snake(spec.operation("List")))
            for page in paginator.paginate(**params, PaginationConfig={"PageSize": 100}):
                out.extend(page[spec.summaries])
                if len(out) >= limit:
                    break
        return out[:limit]

    def tuning_trials(self, name: str) -> list[dict[str, Any]]:
        """Every trial of the tuning job ``name``, by name, all pages
        (ListTrainingJobsForHyperParameterTuningJob)."""
        out: list[dict[str, Any]] = []
        with _translate():
            paginator = self.sagemaker.get_paginator(
                "list_training_jobs_for_hyper_parameter_tuning_job")
            for page in paginator.paginate(HyperParameterTuningJobName=name,
                                           PaginationConfig={"PageSize": 100}):
                out.extend(page["TrainingJobSummaries"])
        return out

    def wait(self, kind: str, name: str, poll: float = 0.5) -> dict[str, Any]:
        status_field = kinds.get(kind).status_field
        while True:
            record = self.describe(kind, name)
            if record[status_field] in ("Completed", "Failed", "Stopped"):
                return record
            time.sleep(poll)

    # -- models and endpoints -----------------------------------------------------------------
    def list_endpoints(self, *, status: str | None = None, limit: int = 50
                       ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"SortBy": "CreationTime", "SortOrder": "Descending"}
        if status:
            params["StatusEquals"] = status
        out: list[dict[str, Any]] = []
        with _translate():
            for page in self.sagemaker.get_paginator("list_endpoints").paginate(
                    **params, PaginationConfig={"PageSize": 100}):
                out.extend(page["Endpoints"])
                if len(out) >= limit:
                    break
        return out[:limit]

    def tags(self, arn: str) -> dict[str, str]:
        with _translate():
            pages = self.sagemaker.get_paginator("list_tags").paginate(ResourceArn=arn)
            return {t["Key"]: t.get("Value", "") for page in pages for t in page["Tags"]}

    def endpoint_url(self, name: str) -> str:
        """Where sagemaker-runtime's InvokeEndpoint for ``name`` is served."""
        return f"{self.url}/endpoints/{name}/invocations"

    def invoke(self, name: str, body: bytes, **headers: str) -> Invocation:
        """InvokeEndpoint; ``headers`` are its optional members (``ContentType=...``)."""
        with _translate():
            response = self.runtime.invoke_endpoint(EndpointName=name, Body=body, **headers)
            payload = response["Body"].read()
        return Invocation(content_type=str(response.get("ContentType", "")),
                          variant=str(response.get("InvokedProductionVariant", "")),
                          custom_attributes=response.get("CustomAttributes"), body=payload)

    def invoke_stream(self, name: str, body: bytes, **headers: str) -> Invocation:
        """InvokeEndpointWithResponseStream; ``chunks`` yields the parts as they arrive."""
        with _translate():
            response = self.runtime.invoke_endpoint_with_response_stream(
                EndpointName=name, Body=body, **headers)

        def chunks() -> Iterator[bytes]:
            from botocore.exceptions import EventStreamError

            try:
                with _translate():
                    for event in response["Body"]:
                        part = event.get("PayloadPart")
                        if part and part.get("Bytes"):
                            yield bytes(part["Bytes"])
            except ShipyardError as exc:
                # A failure after the answer began (ModelStreamError) is the model's doing.
                if isinstance(exc.__cause__, EventStreamError):
                    raise ModelError(exc.message) from exc
                raise

        return Invocation(content_type=str(response.get("ContentType", "")),
                          variant=str(response.get("InvokedProductionVariant", "")),
                          custom_attributes=response.get("CustomAttributes"), chunks=chunks())

    # -- logs -------------------------------------------------------------------------------
    def log_streams(self, kind: str, name: str) -> list[str]:
        with _translate():
            try:
                response = self.logs.describe_log_streams(
                    logGroupName=kinds.get(kind).log_group, logStreamNamePrefix=f"{name}/",
                    orderBy="LogStreamName")
            except self.logs.exceptions.ResourceNotFoundException:
                return []
        return [s["logStreamName"] for s in response.get("logStreams", [])]

    def read_logs(self, kind: str, stream: str, token: str | None) -> tuple[list[LogLine], str]:
        """New lines of one stream since ``token``; returns them and the token to go on."""
        params: dict[str, Any] = {"logGroupName": kinds.get(kind).log_group,
                                  "logStreamName": stream, "startFromHead": True}
        if token:
            params["nextToken"] = token
        lines: list[LogLine] = []
        with _translate():
            while True:
                page = self.logs.get_log_events(**params)
                events = page.get("events", [])
                lines.extend(LogLine(stream, e["timestamp"], e["message"]) for e in events)
                params["nextToken"] = page["nextForwardToken"]
                if not events:
                    break
        return lines, str(params["nextToken"])

    # -- Shipyard's own operations ------------------------------------------------------------
    def metric_series(self, name: str, metric: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"TrainingJobName": name}
        if metric:
            params["MetricName"] = metric
        return list(self._shipyard_call("GetMetricSeries", params)["Points"])

    def raw_call(self, operation: str, **params: Any) -> dict[str, Any]:
        """A SageMaker operation's answer as the server's JSON (timestamps as epoch seconds),
        with the members boto3 would drop (Shipyard's ``SourceTrainingJobArn``) kept."""
        return self._signed_call(f"SageMaker.{operation}", params)

    def _shipyard_call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """A signed call to ``Shipyard.<operation>``, an awsJson1.1 target of Shipyard's own."""
        return self._signed_call(f"Shipyard.{operation}", params)

    def _signed_call(self, target: str, params: dict[str, Any]) -> dict[str, Any]:
        """One awsJson1.1 call to ``target``, signed with the client's key pair."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        body = json.dumps(params).encode()
        request = AWSRequest(method="POST", url=f"{self.url}/", data=body, headers={
            "X-Amz-Target": target,
            "Content-Type": "application/x-amz-json-1.1"})
        SigV4Auth(Credentials(*self._credentials), "sagemaker", self.region).add_auth(request)
        prepared = urllib.request.Request(f"{self.url}/", data=body, method="POST",
                                          headers=dict(request.headers.items()))
        try:
            with urllib.request.urlopen(prepared, timeout=60) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as exc:
            error = json.loads(exc.read() or b"{}")
            raise error_class_for_code(error.get("__type", ""))(
                error.get("message", str(exc))) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RuntimeUnavailable(f"cannot reach the Shipyard server: {exc}") from exc


def _snake(name: str) -> str:
    out = []
    for i, char in enumerate(name):
        if char.isupper() and i:
            out.append("_")
        out.append(char.lower())
    return "".join(out)
