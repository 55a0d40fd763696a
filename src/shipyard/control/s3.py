"""The S3 adapter: every boto3 call Shipyard makes for job data goes through ``S3Client``.

Rules implemented: ``S3Uri`` is ``s3://<bucket>/<key-or-prefix>`` (CreateTrainingJob
``S3DataSource.S3Uri``); a prefix lists every object whose key starts with it, "folder"
marker objects (keys ending in ``/``) are not data. Downloads land under a temporary name
and are renamed into place, so a reader never sees half a file.

botocore's exceptions are translated in one place, ``_translate``: reading job inputs fails
with ``DataSourceError`` (the request named data we cannot read: a 400, before anything
runs), writing artifacts fails with ``StorageError``. Nothing botocore-typed leaves this
module.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.errors import DataSourceError, ShipyardError, StorageError, ValidationError

__all__ = ["S3Client", "S3Location", "S3Object", "parse_s3_uri"]

log = logging.getLogger(__name__)

#: Parts of one file the transfer manager moves at once; the pool is sized from it.
_TRANSFER_CONCURRENCY = 4
#: Codes that mean "this bucket or key is not there" in S3's and moto's error bodies.
_NOT_FOUND = {"NoSuchBucket": "no such bucket", "NoSuchKey": "no such key", "404": "not found"}
_DENIED = {
    "403",
    "AccessDenied",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
}


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key (or key prefix); ``key`` may be empty for a whole bucket."""

    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def child(self, relative: str) -> S3Location:
        """The location ``relative`` below this one, treating the key as a folder."""
        base = self.key if not self.key or self.key.endswith("/") else self.key + "/"
        return S3Location(self.bucket, base + relative.lstrip("/"))


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int


def parse_s3_uri(uri: str) -> S3Location:
    """Split ``s3://bucket/key`` (the ``S3Uri`` shape); raises ``ValidationError``."""
    if not uri.startswith("s3://"):
        raise ValidationError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValidationError(f"{uri!r} names no bucket")
    return S3Location(bucket, key)


class S3Client:
    """A thread-safe, lazily built boto3 S3 client plus concurrent bulk transfers.

    ``endpoint_url`` points at any S3-compatible store (MinIO, moto, LocalStack); with one set,
    path-style addressing is used because such stores rarely resolve virtual-host names.
    Credentials default to boto3's usual chain; pass them explicitly to avoid ambient state.
    """

    def __init__(
        self,
        endpoint_url: str | None,
        region: str,
        max_workers: int = 8,
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValidationError("max_workers must be at least 1")
        self.endpoint_url = endpoint_url
        self.region = region
        self.max_workers = max_workers
        self._credentials = (access_key_id, secret_access_key, session_token)
        self._client: Any = None
        self._transfer_config: Any = None
        self._lock = threading.Lock()

    # -- construction -------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 client, built on first use (botocore sessions are not thread-safe)."""
        with self._lock:
            if self._client is None:
                import boto3
                from boto3.s3.transfer import TransferConfig
                from botocore.config import Config

                key_id, secret, token = self._credentials
                session = boto3.session.Session(
                    aws_access_key_id=key_id,
                    aws_secret_access_key=secret,
                    aws_session_token=token,
                    region_name=self.region,
                )
                config = Config(
                    # Each worker may run a multipart transfer of its own.
                    max_pool_connections=self.max_workers * _TRANSFER_CONCURRENCY + 2,
                    retries={"max_attempts": 5, "mode": "standard"},
                    s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                )
                self._client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
                self._transfer_config = TransferConfig(max_concurrency=_TRANSFER_CONCURRENCY)
            return self._client

    # -- single objects -----------------------------------------------------------------

    def exists(self, uri: str) -> bool:
        """Whether an object exists at exactly ``uri``; a missing bucket is an error."""
        loc = parse_s3_uri(uri)
        with _translate(loc.uri, writing=False):
            try:
                self.client.head_object(Bucket=loc.bucket, Key=loc.key)
                return True
            except Exception as exc:
                if _error_code(exc) not in {"404", "NoSuchKey"}:
                    raise
                self._raise_if_no_bucket(loc, exc)
                return False

    def _raise_if_no_bucket(self, loc: S3Location, cause: BaseException) -> None:
        # HEAD responses carry no body, so a missing bucket and a missing key both read "404".
        if not self._bucket_exists(loc):
            raise DataSourceError(f"{loc.uri}: no such bucket") from cause

    def _bucket_exists(self, loc: S3Location) -> bool:
        try:
            self.client.head_bucket(Bucket=loc.bucket)
        except Exception as exc:
            if _error_code(exc) in {"404", "NoSuchBucket"}:
                return False
            raise
        return True

    def read_bytes(self, uri: str) -> bytes:
        """The whole body of a small object (a manifest file)."""
        loc = parse_s3_uri(uri)
        with _translate(loc.uri, writing=False):
            body = self.client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def download_file(self, uri: str, dest: Path) -> Path:
        """Download one object to ``dest`` via a temporary name in the same folder."""
        loc = parse_s3_uri(uri)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            with _translate(loc.uri, writing=False):
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.client.download_file(
                        loc.bucket, loc.key, str(partial), Config=self._transfer_config
                    )
                except Exception as exc:
                    if _error_code(exc) in {"404", "NoSuchKey"}:
                        self._raise_if_no_bucket(loc, exc)
                        raise DataSourceError(f"{loc.uri}: no such key") from exc
                    raise
                os.replace(partial, dest)
        finally:
            _remove_quietly(partial)
        return dest

    def upload_file(self, source: Path, uri: str) -> str:
        """Upload one local file to ``uri``; returns the URI."""
        loc = parse_s3_uri(uri)
        if not loc.key or loc.key.endswith("/"):
            raise ValidationError(f"{uri!r} names no object key")
        with _translate(loc.uri, writing=True):
            self.client.upload_file(str(source), loc.bucket, loc.key, Config=self._transfer_config)
        return loc.uri

    # -- prefixes and bulk --------------------------------------------------------------

    def list_objects(self, uri: str) -> list[S3Object]:
        """Every object whose key starts with the URI's key, in S3's (key) order.

        Keys ending in ``/`` are folder markers created by consoles, not data, and are left out.
        """
        loc = parse_s3_uri(uri)
        found: list[S3Object] = []
        with _translate(loc.uri, writing=False):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.key):
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):
                        found.append(S3Object(item["Key"], int(item.get("Size", 0))))
        return found

    def download_many(self, pairs: Iterable[tuple[str, Path]]) -> list[Path]:
        """Download ``(uri, dest)`` pairs concurrently; the first failure stops the rest.

        On failure, files already downloaded stay where they are (the caller owns the
        folder and removes it); no temporary ``.partial`` file is left behind.
        """
        return self._run_all([(self.download_file, uri, dest) for uri, dest in pairs])

    def upload_dir(self, source_dir: Path, uri: str) -> list[str]:
        """Upload every regular file under ``source_dir`` below the prefix ``uri``.

        Keys keep the relative path (``uri/<rel>``). Symbolic links are not followed, as
        SageMaker does for processing outputs. Returns the uploaded URIs, sorted.
        """
        prefix = parse_s3_uri(uri)
        jobs = [
            (self.upload_file, path, prefix.child(rel).uri)
            for rel, path in iter_regular_files(source_dir)
        ]
        return sorted(self._run_all(jobs))

    def _run_all(self, jobs: list[tuple[Any, Any, Any]]) -> list[Any]:
        if not jobs:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(jobs))) as pool:
            futures: list[Future[Any]] = [pool.submit(fn, a, b) for fn, a, b in jobs]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
        # Leaving the pool waited for transfers already running, so their temp files are gone.
        for future in futures:
            error = None if future.cancelled() else future.exception()
            if error is not None:
                raise error
        return [future.result() for future in futures]


def iter_regular_files(root: Path) -> Iterator[tuple[str, Path]]:
    """``(posix relative path, path)`` of every regular file under ``root``, sorted.

    Symbolic links (to files or folders) are skipped and logged: SageMaker does not follow
    them when it uploads outputs.
    """
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        dirnames.sort()
        for name in [d for d in dirnames if (base / d).is_symlink()]:
            log.info("not following symbolic link %s", base / name)
        for name in sorted(filenames):
            path = base / name
            if path.is_symlink():
                log.info("not following symbolic link %s", path)
                continue
            if path.is_file():
                yield path.relative_to(root).as_posix(), path


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


@contextmanager
def _translate(uri: str, *, writing: bool) -> Iterator[None]:
    """Turn botocore/boto3 and file-system failures into Shipyard errors, most specific first."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    error: type[ShipyardError] = StorageError if writing else DataSourceError
    try:
        yield
    except ShipyardError:
        raise
    except ClientError as exc:
        raise error(f"{uri}: {_describe(exc)}") from exc
    except Boto3Error as exc:
        # upload_file wraps the ClientError it met (S3UploadFailedError) without ``from``.
        cause = exc.__cause__ or exc.__context__
        detail = _describe(cause) if isinstance(cause, ClientError) else str(exc)
        raise error(f"{uri}: {detail}") from exc
    except NoCredentialsError as exc:
        raise error(f"{uri}: no AWS credentials configured for S3") from exc
    except EndpointConnectionError as exc:
        raise error(f"{uri}: cannot reach the S3 endpoint ({exc})") from exc
    except BotoCoreError as exc:
        raise error(f"{uri}: {exc}") from exc
    except OSError as exc:
        # Local side of a transfer: a download folder or an upload source we cannot use.
        target = exc.filename or uri
        raise StorageError(f"{uri}: local file {target}: {exc.strerror or exc}") from exc


def _describe(exc: Any) -> str:
    code = _error_code(exc)
    if code in _NOT_FOUND:
        return _NOT_FOUND[code]
    if code in _DENIED:
        return f"access denied ({code})"
    message = (getattr(exc, "response", None) or {}).get("Error", {}).get("Message") or str(exc)
    return f"{code or 'error'}: {message}"
