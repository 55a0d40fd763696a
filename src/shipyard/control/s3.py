"""The S3 adapter: every boto3 call Shipyard makes for job data goes through ``S3Client``.

Rules implemented: ``S3Uri`` is ``s3://<bucket>/<key-or-prefix>`` (CreateTrainingJob
``S3DataSource.S3Uri``); a prefix lists every object whose key starts with it, "folder"
marker objects (keys ending in ``/``) are not data. Downloads land under a temporary name
and are renamed into place, so a reader never sees half a file.

Transfers: an object up to ``SINGLE_REQUEST_BYTES`` moves in one request (a GET streamed to
disk, a PUT streamed from the file); a larger one goes through boto3's transfer manager in
parts moved in parallel. Bulk transfers run ``max_workers`` objects at once. Nothing holds a
whole object in memory.

A store that stops answering (killed, restarting, failing over) is ridden over: botocore
retries each request a few times, and when it gives up on a connection error or a 5xx the
whole object (or listing) is tried again, with backoff, for up to ``outage_seconds``
(``STORE_OUTAGE_SECONDS``) after the first failure.

botocore's exceptions are translated in one place, ``_translate``: reading job inputs fails
with ``DataSourceError`` (the request named data we cannot read: a 400, before anything
runs), writing artifacts fails with ``StorageError``. Nothing botocore-typed leaves this
module.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shipyard.control.s3_direct import DirectS3, NotDirect
from shipyard.errors import DataSourceError, ShipyardError, StorageError, ValidationError

__all__ = [
    "SINGLE_REQUEST_BYTES",
    "STORE_OUTAGE_SECONDS",
    "S3Client",
    "S3Location",
    "S3Object",
    "parse_s3_uri",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Objects up to this size move in one request; larger ones in parallel parts. Per-object
#: requests are what small objects cost (a HEAD and a transfer manager each, before), and
#: parts only pay off once an object is several parts long (s5cmd's parts are 50 MiB).
SINGLE_REQUEST_BYTES = 64 * 1024 * 1024
#: Part size of the objects above ``SINGLE_REQUEST_BYTES``.
_PART_BYTES = 16 * 1024 * 1024
#: Parts of one large object moved at once; the connection pool is sized from it.
_TRANSFER_CONCURRENCY = 4
#: Read and write size when a GET is streamed to disk: few calls, a bounded buffer.
_STREAM_CHUNK_BYTES = 1024 * 1024
#: How long one transfer rides over a store that does not answer, from its first failure.
#: The embedded store is back within ~2-5 s of dying; a store restarted by hand, upgraded or
#: failed over takes longer. Past this the job fails as before.
STORE_OUTAGE_SECONDS = 60.0
#: Backoff between whole-transfer retries: doubling from the first to the last.
_RETRY_DELAYS = (0.5, 5.0)
#: Retries botocore makes of each request (after its first attempt) before the whole
#: transfer is tried again.
_BOTOCORE_RETRIES = 5
#: HTTP statuses and S3 codes a restarting or overloaded store answers with.
_TRANSIENT_STATUS = {500, 502, 503, 504}
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
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
    ``outage_seconds`` bounds how long a transfer waits for a store that stopped answering.
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
        outage_seconds: float = STORE_OUTAGE_SECONDS,
    ) -> None:
        if max_workers < 1:
            raise ValidationError("max_workers must be at least 1")
        if outage_seconds < 0:
            raise ValidationError("outage_seconds must not be negative")
        self.endpoint_url = endpoint_url
        self.region = region
        self.max_workers = max_workers
        self.outage_seconds = outage_seconds
        self._credentials = (access_key_id, secret_access_key, session_token)
        self._client: Any = None
        self._transfer_config: Any = None
        #: boto3's credentials (any source, refreshed as botocore refreshes them) and the
        #: direct path for single objects at an explicit endpoint (``control.s3_direct``).
        self._session_credentials: Any = None
        self._direct: DirectS3 | None = None
        self._lock = threading.Lock()

    # -- construction -------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 client, built on first use (botocore sessions are not thread-safe)."""
        with self._lock:
            if self._client is None:
                import boto3
                import botocore.session
                from boto3.s3.transfer import TransferConfig
                from botocore.config import Config

                core = botocore.session.get_session()
                # dateutil parsing each response's Last-Modified is ~10% of a small GET.
                core.get_component("response_parser_factory").set_parser_defaults(
                    timestamp_parser=_parse_timestamp
                )
                key_id, secret, token = self._credentials
                session = boto3.session.Session(
                    aws_access_key_id=key_id,
                    aws_secret_access_key=secret,
                    aws_session_token=token,
                    region_name=self.region,
                    botocore_session=core,
                )
                config = Config(
                    # Pre-signed URLs too (botocore signs those the legacy way by default,
                    # which binds a PUT to its Content-Type).
                    signature_version="s3v4",
                    # Each worker may run a multipart transfer of its own.
                    max_pool_connections=self.max_workers * _TRANSFER_CONCURRENCY + 2,
                    retries={"max_attempts": _BOTOCORE_RETRIES, "mode": "standard"},
                    s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                )
                self._client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
                self._session_credentials = session.get_credentials()
                if self.endpoint_url and self._session_credentials is not None:
                    try:
                        self._direct = DirectS3(self.endpoint_url, self.region)
                    except ValueError:
                        self._direct = None
                self._transfer_config = TransferConfig(
                    multipart_threshold=SINGLE_REQUEST_BYTES,
                    multipart_chunksize=_PART_BYTES,
                    max_concurrency=_TRANSFER_CONCURRENCY,
                    # Downloaded chunks waiting for the disk: 32 x 256 KiB per large object.
                    max_io_queue=32,
                )
            return self._client

    # -- single objects -----------------------------------------------------------------

    def exists(self, uri: str) -> bool:
        """Whether an object exists at exactly ``uri``; a missing bucket is an error."""
        loc = parse_s3_uri(uri)
        with _translate(loc.uri, writing=False):
            try:
                self._riding_outages(
                    loc.uri, lambda: self.client.head_object(Bucket=loc.bucket, Key=loc.key)
                )
                return True
            except Exception as exc:
                if _error_code(exc) not in {"404", "NoSuchKey"}:
                    raise
                self._raise_if_no_bucket(loc, exc)
                return False

    def _raise_if_no_bucket(self, loc: S3Location, cause: BaseException) -> None:
        # HEAD responses carry no body, so a missing bucket and a missing key both read "404".
        if not self._riding_outages(loc.uri, lambda: self._bucket_exists(loc)):
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

        def read() -> bytes:
            body = self.client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        with _translate(loc.uri, writing=False):
            return self._riding_outages(loc.uri, read)

    def download_file(self, uri: str, dest: Path) -> Path:
        """Download one object to ``dest`` via a temporary name in the same folder."""
        loc = parse_s3_uri(uri)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            with _translate(loc.uri, writing=False):
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self._riding_outages(loc.uri, lambda: self._download_once(loc, partial))
                except Exception as exc:
                    if _error_code(exc) in {"404", "NoSuchKey"}:
                        self._raise_if_no_bucket(loc, exc)
                        raise DataSourceError(f"{loc.uri}: no such key") from exc
                    raise
                os.replace(partial, dest)
        finally:
            _remove_quietly(partial)
        return dest

    def _direct_credentials(self) -> tuple[DirectS3, tuple[str, str, str | None]] | None:
        """The direct path and the credentials to sign with, where it may be taken."""
        self.client  # noqa: B018 - built with the client
        direct = self._direct
        if direct is None or not direct.enabled:
            return None
        frozen = self._session_credentials.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            return None
        return direct, (frozen.access_key, frozen.secret_key, frozen.token)

    def _download_once(self, loc: S3Location, partial: Path) -> None:
        direct = self._direct_credentials()
        if direct is not None:
            try:
                direct[0].get(loc.bucket, loc.key, partial, direct[1], SINGLE_REQUEST_BYTES)
                return
            except NotDirect:
                pass  # an error, a large object: botocore's path below
        # The size is learnt from the GET itself: no HEAD first, as for most objects it is
        # the only request.
        response = self.client.get_object(Bucket=loc.bucket, Key=loc.key)
        body = response["Body"]
        try:
            if int(response.get("ContentLength") or 0) > SINGLE_REQUEST_BYTES:
                body.close()  # large: the transfer manager fetches its parts in parallel
                self.client.download_file(
                    loc.bucket, loc.key, str(partial), Config=self._transfer_config
                )
                return
            with open(partial, "wb") as out:
                shutil.copyfileobj(body, out, _STREAM_CHUNK_BYTES)
        finally:
            body.close()

    def upload_file(self, source: Path, uri: str) -> str:
        """Upload one local file to ``uri``; returns the URI."""
        loc = parse_s3_uri(uri)
        if not loc.key or loc.key.endswith("/"):
            raise ValidationError(f"{uri!r} names no object key")
        with _translate(loc.uri, writing=True):
            self._riding_outages(loc.uri, lambda: self._upload_once(source, loc))
        return loc.uri

    def _upload_once(self, source: Path, loc: S3Location) -> None:
        direct = self._direct_credentials()
        if direct is not None:
            try:
                direct[0].put(loc.bucket, loc.key, source, direct[1], SINGLE_REQUEST_BYTES)
                return
            except NotDirect:
                pass  # an error, a large file: botocore's path below
        with open(source, "rb") as body:
            if os.fstat(body.fileno()).st_size <= SINGLE_REQUEST_BYTES:
                self.client.put_object(Bucket=loc.bucket, Key=loc.key, Body=body)
                return
        self.client.upload_file(str(source), loc.bucket, loc.key, Config=self._transfer_config)

    def presigned_url(self, uri: str, method: str = "GET", expires_seconds: int = 86400) -> str:
        """A URL that lets whoever holds it ``method`` (GET, PUT) the object at ``uri`` for
        ``expires_seconds``, through this client's endpoint. Signing is local: no request."""
        loc = parse_s3_uri(uri)
        if not loc.key:
            raise ValidationError(f"{uri!r} names no object key")
        operation = {"GET": "get_object", "PUT": "put_object"}[method]
        with _translate(loc.uri, writing=method != "GET"):
            return str(self.client.generate_presigned_url(
                operation, Params={"Bucket": loc.bucket, "Key": loc.key},
                ExpiresIn=expires_seconds))

    def ensure_bucket(self, uri: str) -> None:
        """Make the bucket of ``uri`` unless it exists."""
        loc = parse_s3_uri(uri)
        with _translate(loc.uri, writing=True):
            if not self._riding_outages(loc.uri, lambda: self._bucket_exists(loc)):
                try:
                    self.client.create_bucket(Bucket=loc.bucket)
                except Exception as exc:
                    if _error_code(exc) not in {"BucketAlreadyOwnedByYou",
                                                "BucketAlreadyExists"}:
                        raise

    def delete_prefix(self, uri: str) -> None:
        """Remove every object whose key starts with the URI's key; idempotent."""
        loc = parse_s3_uri(uri)

        def delete() -> None:
            keys = [o.key for o in self.list_objects(uri)]
            for start in range(0, len(keys), 1000):
                self.client.delete_objects(Bucket=loc.bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})

        with _translate(loc.uri, writing=True):
            self._riding_outages(loc.uri, delete)

    # -- prefixes and bulk --------------------------------------------------------------

    def list_objects(self, uri: str) -> list[S3Object]:
        """Every object whose key starts with the URI's key, in S3's (key) order.

        Keys ending in ``/`` are folder markers created by consoles, not data, and are left out.
        """
        loc = parse_s3_uri(uri)

        def listing() -> list[S3Object]:
            found: list[S3Object] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=loc.bucket, Prefix=loc.key):
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):
                        found.append(S3Object(item["Key"], int(item.get("Size", 0))))
            return found

        with _translate(loc.uri, writing=False):
            return self._riding_outages(loc.uri, listing)

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

    # -- a store that went away ---------------------------------------------------------

    def _riding_outages(self, what: str, attempt: Callable[[], T]) -> T:
        """``attempt()``, run again whole while the store does not answer, backing off,
        until ``outage_seconds`` after the first failure; then its last error goes out."""
        first_failure: float | None = None
        delay = _RETRY_DELAYS[0]
        while True:
            try:
                return attempt()
            except Exception as exc:
                if not _is_outage(exc):
                    raise
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                left = first_failure + self.outage_seconds - now
                if left <= 0:
                    raise
                pause = min(delay, left)
                log.warning(
                    "%s: the S3 store %s does not answer (%s); trying again in %.1f s, for "
                    "up to %.0f s", what, self.endpoint_url or "(AWS)", _brief(exc), pause,
                    self.outage_seconds,
                )
                time.sleep(pause)
                delay = min(delay * 2, _RETRY_DELAYS[1])


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


def _is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the store is unreachable or restarting,
    rather than that the request was wrong."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
    )

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (ConnectionError, HTTPClientError, IncompleteReadError)):
            return True
        if isinstance(current, ClientError):
            status = current.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return status in _TRANSIENT_STATUS or _error_code(current) in _TRANSIENT_CODES
        # s3transfer keeps the error its own retries ended on as ``last_exception``.
        current = (
            getattr(current, "last_exception", None) or current.__cause__ or current.__context__
        )
    return False


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


def _parse_timestamp(value: str) -> datetime.datetime:
    """botocore's timestamp parsing, fast for the two forms S3 sends: RFC 1123 headers
    (``Last-Modified``) and ISO 8601 in XML bodies; anything else goes to botocore's."""
    from botocore.utils import parse_timestamp

    parsed: datetime.datetime | None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        return parse_timestamp(value)  # type: ignore[no-any-return]
    return parsed


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
