"""A real S3-compatible server for tests: moto's server in a subprocess on a free port.

Register the fixtures in a conftest with
``from tests.support.s3server import s3_bucket, s3_server  # noqa: F401``, or in a test
module by assignment (which keeps linters quiet about the shadowing parameters)::

    from tests.support import s3server

    s3_server = s3server.s3_server
    s3_bucket = s3server.s3_bucket
    s3 = s3server.s3

``s3_server`` (session scope) yields an ``S3Server`` with the endpoint URL and helpers that
build clients with dummy credentials passed as arguments, so no test touches ``os.environ``;
``s3`` is Shipyard's adapter on it, ``s3_bucket`` a fresh bucket.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shipyard.api.s3store import SeaweedStore
from shipyard.control.s3 import S3Client
from tests.support.net import unused_port
from tests.support.processes import terminate

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"  # moto accepts any credentials
STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class S3Server:
    url: str
    region: str = REGION

    def client(self, max_workers: int = 8) -> S3Client:
        """Shipyard's adapter pointed at this server."""
        return S3Client(
            self.url,
            self.region,
            max_workers,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )

    def boto(self) -> Any:
        """A plain boto3 client, for tests to arrange and inspect buckets independently."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=self.region
        ).client("s3", endpoint_url=self.url)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    port = unused_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not _answers(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")[-2000:]
                    pytest.fail(f"moto server did not start on {url}:\n{output}")
                time.sleep(0.05)
            yield S3Server(url)
        finally:
            terminate(proc)


@pytest.fixture
def s3(s3_server: S3Server) -> S3Client:
    """Shipyard's S3 adapter pointed at the shared server."""
    return s3_server.client()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket on the shared server (names never repeat within a session)."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.boto().create_bucket(Bucket=name)
    return name


@contextlib.contextmanager
def seaweed(root: Path, key: tuple[str, str], host: str = "127.0.0.1"
            ) -> Iterator[SeaweedStore]:
    """The store ``shipyard server`` runs (SeaweedFS) under ``root``, taking ``key``, on
    ``host`` and a free port, for as long as the ``with`` block runs."""
    store = SeaweedStore(root, port=0, keys=lambda: [key], host=host)
    store.start()
    try:
        yield store
    finally:
        store.stop()


#: The key pair of the depot stores the cluster tests run (:func:`seaweed`).
DEPOT_KEY = ("SYDEPOTTESTKEY000001", "depot-test-secret-key-000000000000000000")


def depot_boto(store: SeaweedStore) -> Any:
    """A boto3 S3 client of ``store`` with :data:`DEPOT_KEY`."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id=DEPOT_KEY[0], aws_secret_access_key=DEPOT_KEY[1],
        region_name="us-east-1").client("s3", endpoint_url=store.url)
