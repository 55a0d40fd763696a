"""The depot a cluster runtime ships mounts through (``runtimes.shipping``), on the platform's
S3 store: objects under one ``s3://`` prefix, and pre-signed URLs the nodes use without
credentials (valid a week, SigV4's longest: a container may wait that long for room)."""

from __future__ import annotations

import threading
from pathlib import Path

from shipyard.control.s3 import S3Client, parse_s3_uri
from shipyard.errors import ValidationError

#: How long a URL handed to a node stays good.
URL_SECONDS = 7 * 24 * 3600


class S3Depot:
    """The :class:`~shipyard.runtimes.shipping.Depot` under ``uri`` of ``s3``'s store."""

    def __init__(self, s3: S3Client, uri: str, setting: str = "swarm_depot") -> None:
        if not uri.startswith("s3://") or not parse_s3_uri(uri).bucket:
            raise ValidationError(f"setting {setting} must be an s3:// location, not {uri!r}")
        self._s3 = s3
        self._root = uri.rstrip("/")
        self._ready = False
        self._lock = threading.Lock()

    def _uri(self, key: str) -> str:
        return f"{self._root}/{key}"

    def _ensure_bucket(self) -> None:
        with self._lock:
            ready = self._ready
        if not ready:
            self._s3.ensure_bucket(self._root)
            with self._lock:
                self._ready = True

    def upload(self, source: Path, key: str) -> None:
        self._ensure_bucket()
        self._s3.upload_file(source, self._uri(key))

    def download(self, key: str, dest: Path) -> None:
        self._s3.download_file(self._uri(key), dest)

    def read(self, key: str) -> bytes:
        return self._s3.read_bytes(self._uri(key))

    def url(self, key: str, method: str = "GET") -> str:
        return self._s3.presigned_url(self._uri(key), method, URL_SECONDS)

    def object_url(self, uri: str) -> str:
        return self._s3.presigned_url(uri, "GET", URL_SECONDS)

    def remove(self, prefix: str) -> None:
        self._ensure_bucket()  # idempotent: nothing under a prefix of a bucket not made yet
        self._s3.delete_prefix(self._uri(prefix.rstrip("/")) + "/")
