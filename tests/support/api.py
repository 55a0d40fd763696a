"""Shipyard's API server for tests: started in a thread of the test process, driven by real
boto3 clients signed with its default key, and by hand-made requests botocore would refuse
to send."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from shipyard.api.server import ApiServer
from shipyard.control import ControlPlane
from shipyard.runtimes import DockerRuntime
from shipyard.settings import Settings
from tests.support.images import SESSION_SCOPE
from tests.support.jobs import ROLE, training_request

REGION = "us-east-1"
JSON_TYPE = "application/x-amz-json-1.1"


def session(akid: str, secret: str, region: str = REGION) -> boto3.session.Session:
    """A boto3 session whose keys are passed as arguments, never taken from the environment."""
    return boto3.session.Session(aws_access_key_id=akid, aws_secret_access_key=secret,
                                 region_name=region)


def post_json(url: str, target: str, body: bytes,
              keys: tuple[str, str] | None) -> tuple[int, bytes, str]:
    """A hand-made awsJson1.1 POST to ``X-Amz-Target: target`` (none when empty), signed
    with ``keys`` unless None: status, body and content type of the answer."""
    headers = {"Content-Type": JSON_TYPE}
    if target:
        headers["X-Amz-Target"] = target
    request = AWSRequest(method="POST", url=f"{url}/", data=body, headers=headers)
    if keys is not None:
        SigV4Auth(Credentials(*keys), "sagemaker", REGION).add_auth(request)
    prepared = urllib.request.Request(f"{url}/", data=body, method="POST",
                                      headers=dict(request.headers.items()))
    try:
        with urllib.request.urlopen(prepared, timeout=30) as response:
            return response.status, response.read(), response.headers["content-type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["content-type"]


class Api:
    """Clients of one running server: ``sm``, ``rt`` (sagemaker-runtime), ``logs``, ``sts``,
    with no retries, so each call is one request."""

    def __init__(self, server: ApiServer, url: str) -> None:
        self.server = server
        self.url = url
        self.akid, self.secret = server.keys.default
        clients = session(self.akid, self.secret)
        config = Config(retries={"max_attempts": 1})
        self.sm = clients.client("sagemaker", endpoint_url=url, config=config)
        self.rt = clients.client("sagemaker-runtime", endpoint_url=url, config=config)
        self.logs = clients.client("logs", endpoint_url=url, config=config)
        self.sts = clients.client("sts", endpoint_url=url, config=config)

    def post_target(self, target: str, body: bytes, *, sign: bool = True,
                    secret: str | None = None) -> tuple[int, dict[str, Any]]:
        """An awsJson1.1 request with any body: status and the parsed answer."""
        keys = (self.akid, secret or self.secret) if sign else None
        status, answer, _ = post_json(self.url, target, body, keys)
        return status, json.loads(answer or b"{}")

    def raw(self, path: str, body: bytes = b"", *, method: str = "POST",
            headers: dict[str, str] | None = None, secret: str | None = None,
            chunked: bool = False) -> tuple[int, dict[str, str], bytes]:
        """A hand-made signed request to ``path``: what botocore itself would refuse to send."""
        request = AWSRequest(method=method, url=f"{self.url}{path}", data=body,
                             headers=dict(headers or {}))
        SigV4Auth(Credentials(self.akid, secret or self.secret), "sagemaker",
                  REGION).add_auth(request)
        sent = dict(request.headers.items())
        address = urlsplit(self.url)
        conn = http.client.HTTPConnection(str(address.hostname), address.port, timeout=30)
        try:
            if chunked:
                conn.putrequest(method, path, skip_accept_encoding=True)
                for name, value in sent.items():
                    conn.putheader(name, value)
                conn.putheader("Transfer-Encoding", "chunked")
                conn.endheaders()
                for start in range(0, len(body), 8192):
                    piece = body[start:start + 8192]
                    conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                conn.send(b"0\r\n\r\n")
            else:
                conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return (response.status, {k.lower(): v for k, v in response.getheaders()},
                    response.read())
        finally:
            conn.close()


@contextmanager
def serving(settings: Settings, plane: ControlPlane) -> Iterator[Api]:
    """An ApiServer over ``plane`` in a thread; stopped, and the plane closed, on exit."""
    server = ApiServer(settings, plane)
    url = server.start_in_thread()
    try:
        yield Api(server, url)
    finally:
        server.stop()
        plane.close()


def deploy(api: Api, name: str, project: Path) -> dict[str, Any]:
    """Model, config and endpoint ``name`` on the process-runtime "image" ``project``; its
    record once in service."""
    api.sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": str(project)})
    api.sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": f"{name}-model",
        "InitialInstanceCount": 1, "InstanceType": "local"}])
    api.sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    api.sm.get_waiter("endpoint_in_service").wait(
        EndpointName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    return dict(api.sm.describe_endpoint(EndpointName=name))


def delete_endpoints(api: Api, plane: ControlPlane, timeout: float = 30) -> None:
    """Delete every endpoint and wait until they (and their processes) are gone."""
    for summary in api.sm.list_endpoints(MaxResults=100)["Endpoints"]:
        api.sm.delete_endpoint(EndpointName=summary["EndpointName"])
    deadline = time.monotonic() + timeout
    while plane.ctx.store.list_jobs("endpoint") and time.monotonic() < deadline:
        time.sleep(0.05)


# -- the server over real containers that test_api and test_trust share ----------------------


@pytest.fixture(scope="module")
def docker_api(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Api]:
    """Register in a test module as ``api = support_api.docker_api``: one server per module."""
    data = tmp_path_factory.mktemp("api")
    settings = Settings.load({"data_dir": str(data / "state"), "stop_grace_seconds": 3,
                              "api_port": 0}, environ={})
    runtime = DockerRuntime(docker_client, labels={"org.shipyard.scope": SESSION_SCOPE})
    with serving(settings, ControlPlane(settings, runtime)) as api:
        yield api


def training(name: str, image: str, tmp: Path, **extra: Any) -> dict[str, Any]:
    """The training job the API tests create (one row in ``a.csv``)."""
    return training_request(name, tmp, image=image, files={"a.csv": "1\n"}, volume_gb=10,
                            max_runtime_s=600, **extra)


def wait_done(api: Api, name: str) -> dict[str, Any]:
    api.sm.get_waiter("training_job_completed_or_stopped").wait(
        TrainingJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    return dict(api.sm.describe_training_job(TrainingJobName=name))
