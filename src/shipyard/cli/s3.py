"""``shipyard s3 ls | cp | mb | rm | rb``: buckets and objects from the terminal, thin over boto3.

The store is the one the setting ``s3_endpoint_url`` names (with ``s3_access_key_id`` and
``s3_secret_access_key`` when set), else the one the running server of the data directory
runs (its URL from ``server.json``, the API's default key pair). There is no fallback to
AWS's S3: a user who meant the embedded store and had no server running would otherwise
write to (or read from) whatever AWS account the environment holds.

Transfers go through boto3's transfer manager, so files of any size stream in parts and a
folder's files move concurrently. Output follows ``aws s3``'s (``ls`` columns, the
``upload: A to B`` lines), so habits and scripts carry over.

botocore's and s3transfer's exceptions become ``CliError`` in one place, ``_Connection.
translated``; bucket names are checked against AWS's naming rules before any call, since
stores differ in what they accept and AWS's answer (``InvalidBucketName``) names no rule.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import click

from shipyard.cli.errors import CliError, ExitCode
from shipyard.settings import Settings

#: DeleteObjects takes at most this many keys per request.
_DELETE_BATCH = 1000
#: Prefixes and suffixes AWS reserves (access points, S3 Express, Object Lambda, tables...).
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_IP_ADDRESS = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_NAME_CHARACTER = re.compile(r"[a-z0-9.-]")
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


# -- names and URIs -------------------------------------------------------------------------


def bucket_name_problem(name: str) -> str | None:
    """The AWS bucket naming rule ``name`` breaks (general purpose buckets), or None."""
    if not 3 <= len(name) <= 63:
        return f"must be 3 to 63 characters long (it has {len(name)})"
    bad = list(dict.fromkeys(c for c in name if not _NAME_CHARACTER.fullmatch(c)))
    if bad:
        return ("may contain only lowercase letters, digits, dots and hyphens (not "
                + ", ".join(repr(c) for c in bad) + ")")
    if not (name[0].isalnum() and name[-1].isalnum()):
        return "must begin and end with a letter or a digit"
    if ".." in name:
        return "must not contain two adjacent dots"
    if _IP_ADDRESS.fullmatch(name):
        return "must not be formatted as an IP address"
    for prefix in _RESERVED_PREFIXES:
        if name.startswith(prefix):
            return f"must not begin with {prefix!r} (reserved by AWS)"
    for suffix in _RESERVED_SUFFIXES:
        if name.endswith(suffix):
            return f"must not end with {suffix!r} (reserved by AWS)"
    return None


@dataclass(frozen=True)
class S3Path:
    bucket: str
    key: str = ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    @property
    def folder(self) -> str:
        """The key as a folder: empty (the whole bucket) or ending in ``/``; ``data`` means
        the objects below ``data/``, never ``database.csv``."""
        return self.key if not self.key or self.key.endswith("/") else self.key + "/"

    def below(self, relative: str) -> S3Path:
        return S3Path(self.bucket, self.folder + relative)


def is_s3(text: str) -> bool:
    return text.startswith("s3://")


def parse_uri(text: str) -> S3Path:
    """``s3://bucket[/key]``, its bucket checked against AWS's rules; else a usage error."""
    if not is_s3(text):
        raise CliError(f"{text!r} is not an s3:// URI (s3://BUCKET[/KEY])", ExitCode.USAGE)
    bucket, _, key = text[len("s3://"):].partition("/")
    if not bucket:
        raise CliError(f"{text!r} names no bucket (s3://BUCKET[/KEY])", ExitCode.USAGE)
    problem = bucket_name_problem(bucket)
    if problem is not None:
        raise CliError(f"bad bucket name {bucket!r}: a bucket name {problem}", ExitCode.USAGE)
    return S3Path(bucket, key)


def _bucket_only(text: str) -> S3Path:
    path = parse_uri(text)
    if path.key:
        raise CliError(f"{text!r} names a key; give the bucket alone (s3://BUCKET)",
                       ExitCode.USAGE)
    return path


# -- which store ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    url: str
    access_key_id: str | None
    secret_access_key: str | None
    #: The store came from the setting s3_endpoint_url (else: the server's own store).
    from_setting: bool

    @property
    def described(self) -> str:
        origin = "the setting s3_endpoint_url" if self.from_setting else "the server's store"
        return f"the S3 store at {self.url} ({origin})"


def resolve_store(settings: Settings) -> Store:
    """The setting s3_endpoint_url, else the store of this data directory's running server."""
    if settings.s3_endpoint_url:
        return Store(settings.s3_endpoint_url, settings.s3_access_key_id,
                     settings.s3_secret_access_key, from_setting=True)
    # The server module loads the control plane: only commands that need it pay for it.
    from shipyard.api.credentials import load_or_create
    from shipyard.api.server import healthy, read_info

    info = read_info(settings)
    if info is None or not healthy(info.url):
        raise CliError(f"no Shipyard server runs for {settings.data_dir}, so there is no S3 "
                       "store to use: start one with `shipyard server` (it runs the store), "
                       "or name a store with the setting s3_endpoint_url", ExitCode.PLATFORM)
    if info.s3_error:
        raise CliError(f"the S3 store of the server at {info.url} did not start: "
                       f"{info.s3_error}\n(fix it and restart the server, or name another "
                       "store with the setting s3_endpoint_url)", ExitCode.PLATFORM)
    if not info.s3_url:
        raise CliError(f"the server at {info.url} runs no S3 store (its setting embedded_s3 "
                       "is off): name a store with the setting s3_endpoint_url, or restart "
                       "the server with embedded_s3=true", ExitCode.PLATFORM)
    akid, secret = load_or_create(settings.data_dir).default
    return Store(info.s3_url, akid, secret, from_setting=False)


# -- the client and its errors --------------------------------------------------------------


class _Connection:
    """A boto3 S3 client on the resolved store, and the translation of its errors."""

    def __init__(self, settings: Settings) -> None:
        self.store = resolve_store(settings)
        import boto3
        from botocore.config import Config

        self.region = settings.region
        session = boto3.session.Session(
            aws_access_key_id=self.store.access_key_id,
            aws_secret_access_key=self.store.secret_access_key, region_name=settings.region)
        # Stores other than AWS's rarely resolve bucket.host names.
        on_aws = (urlsplit(self.store.url).hostname or "").endswith(".amazonaws.com")
        self.client: Any = session.client("s3", endpoint_url=self.store.url, config=Config(
            s3={"addressing_style": "auto" if on_aws else "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=16, connect_timeout=10))

    @contextlib.contextmanager
    def transfers(self) -> Iterator[Any]:
        """boto3's transfer manager; leaving on an error cancels what has not finished."""
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        # "classic": the CRT client, where installed, picks its own endpoints and threads.
        config = TransferConfig(preferred_transfer_client="classic")
        with create_transfer_manager(self.client, config) as manager:
            yield manager

    @contextlib.contextmanager
    def translated(self, target: S3Path | None) -> Iterator[None]:
        """botocore's, boto3's and s3transfer's errors as one-line ``CliError``s;
        ``target`` is what the call names, for the message (None: the store itself)."""
        from boto3.exceptions import RetriesExceededError
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            HTTPClientError,
            NoCredentialsError,
            ParamValidationError,
        )
        from botocore.exceptions import ConnectionError as Unreachable
        from s3transfer.exceptions import RetriesExceededError as TransferRetriesExceededError

        try:
            yield
        except CliError:
            raise
        except (RetriesExceededError, TransferRetriesExceededError) as exc:
            raise CliError(f"{self.store.described} does not answer: {exc.last_exception}",
                           ExitCode.PLATFORM) from exc
        except (Unreachable, HTTPClientError) as exc:
            raise CliError(f"{self.store.described} does not answer: {exc}",
                           ExitCode.PLATFORM) from exc
        except NoCredentialsError as exc:
            raise CliError(f"no key pair for {self.store.described}: set s3_access_key_id "
                           "and s3_secret_access_key", ExitCode.USAGE) from exc
        except ParamValidationError as exc:
            raise CliError(" ".join(str(exc).split()), ExitCode.USAGE) from exc
        except BotoCoreError as exc:
            raise CliError(f"{self.store.described}: {exc}", ExitCode.PLATFORM) from exc
        except Exception as exc:
            # boto3's wrappers (upload_file's S3UploadFailedError) keep the store's
            # ClientError only as their context.
            error = exc
            while error is not None and not isinstance(error, ClientError):
                error = error.__cause__ or error.__context__  # type: ignore[assignment]
            if error is not None:
                raise self._client_error(error, target) from exc
            if isinstance(exc, OSError):
                # The local side of a transfer: a folder we cannot write, a file gone.
                where = exc.filename or (target.uri if target else self.store.url)
                raise CliError(f"{where}: {exc.strerror or exc}", ExitCode.USAGE) from exc
            raise

    def _client_error(self, exc: Any, target: S3Path | None) -> CliError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        # The bucket the store names: a copy's target may be missing where its source is not.
        bucket = str(error.get("BucketName") or (target.bucket if target else ""))
        if code == "NoSuchBucket" or (code in _NOT_FOUND_CODES and target and not target.key):
            return CliError(f"no such bucket s3://{bucket}", ExitCode.NOT_FOUND)
        if code in _NOT_FOUND_CODES and target is not None:
            # HEAD answers carry no body: a missing bucket and a missing key both read "404".
            try:
                exists = self.bucket_exists(target.bucket)
            except Exception:
                exists = True  # the store went away meanwhile: the key is what was asked for
            if not exists:
                return CliError(f"no such bucket s3://{bucket}", ExitCode.NOT_FOUND)
            return CliError(f"no such key {target.uri}", ExitCode.NOT_FOUND)
        if code in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            return CliError(f"bucket s3://{bucket} already exists", ExitCode.USAGE)
        if code == "BucketNotEmpty":
            return _not_empty(bucket)
        if code in _DENIED_CODES:
            fix = ("check the settings s3_access_key_id and s3_secret_access_key"
                   if self.store.from_setting else "the store reads the key pairs of "
                   "credentials.json at its start: restart the server")
            return CliError(f"{self.store.described} refused the request ({code}): {fix}",
                            ExitCode.USAGE)
        message = error.get("Message") or str(exc)
        where = target.uri if target else self.store.url
        return CliError(f"{where}: {code or 'error'}: {message}", ExitCode.PLATFORM)

    def bucket_exists(self, bucket: str) -> bool:
        try:
            self.client.head_bucket(Bucket=bucket)
        except Exception as exc:
            if _code(exc) in {"404", "NoSuchBucket", "NotFound"}:
                return False
            raise
        return True

    def pages(self, path: S3Path, prefix: str, *, delimiter: bool = False
              ) -> Iterator[dict[str, Any]]:
        """ListObjectsV2 pages below ``prefix``, translated."""
        extra = {"Delimiter": "/"} if delimiter else {}
        with self.translated(path):
            paginator = self.client.get_paginator("list_objects_v2")
            yield from paginator.paginate(Bucket=path.bucket, Prefix=prefix, **extra)

    def objects(self, path: S3Path) -> list[str]:
        """The keys below ``path`` taken as a folder; folder markers (keys ending in ``/``,
        made by consoles) hold no data and are left out."""
        return [item["Key"] for page in self.pages(path, path.folder)
                for item in page.get("Contents", []) if not item["Key"].endswith("/")]

    def require_bucket(self, bucket: str) -> None:
        """Refuse a missing destination bucket, as AWS does: SeaweedFS (the embedded store)
        creates it on PutObject instead, and answers a copy into it with InternalError."""
        with self.translated(S3Path(bucket)):
            if not self.bucket_exists(bucket):
                raise CliError(f"no such bucket s3://{bucket}", ExitCode.NOT_FOUND)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _not_empty(bucket: str) -> CliError:
    return CliError(f"bucket s3://{bucket} is not empty: remove its objects first "
                    f"(shipyard s3 rm --recursive s3://{bucket}) or use rb --force",
                    ExitCode.USAGE)


# -- output like aws s3's -------------------------------------------------------------------


def _stamp(value: dt.datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def human_size(size: int) -> str:
    """``aws s3 ls --human-readable``'s sizes: bytes below 1 KiB, else one decimal."""
    if size == 1:
        return "1 Byte"
    if size < 1024:
        return f"{size} Bytes"
    for power, unit in enumerate(_SIZE_UNITS, start=1):
        if round(size / 1024 ** power) < 1024 or unit == _SIZE_UNITS[-1]:
            return f"{size / 1024 ** power:.1f} {unit}"
    raise AssertionError("unreachable")


# -- commands -------------------------------------------------------------------------------


@click.group("s3")
def s3() -> None:
    """Buckets and objects in the S3 store of the data directory's server (or the store the
    setting s3_endpoint_url names)."""


@s3.command("ls")
@click.argument("uri", required=False)
@click.option("--recursive", "-r", is_flag=True, help="Every object below, with full keys.")
@click.option("--human-readable", is_flag=True, help="Sizes in KiB, MiB, ...")
@click.option("--summarize", is_flag=True, help="End with the object count and total size.")
@click.pass_obj
def ls(settings: Settings, uri: str | None, recursive: bool, human_readable: bool,
       summarize: bool) -> None:
    """List buckets, or the objects and prefixes of s3://BUCKET[/PREFIX]."""
    path = parse_uri(uri) if uri is not None else None
    conn = _Connection(settings)
    if path is None:
        with conn.translated(None):
            buckets = conn.client.list_buckets().get("Buckets", [])
        for bucket in buckets:
            click.echo(f"{_stamp(bucket['CreationDate'])} {bucket['Name']}")
        return
    count = total = 0
    for page in conn.pages(path, path.key, delimiter=not recursive):
        for common in page.get("CommonPrefixes", []):
            click.echo(f"{'PRE':>30} {common['Prefix'].rstrip('/').rsplit('/', 1)[-1]}/")
        for item in page.get("Contents", []):
            size = int(item.get("Size", 0))
            count, total = count + 1, total + size
            shown = human_size(size) if human_readable else str(size)
            name = item["Key"] if recursive else item["Key"].rsplit("/", 1)[-1]
            click.echo(f"{_stamp(item['LastModified'])} {shown:>10} {name}")
    if summarize:
        click.echo(f"\nTotal Objects: {count}\n   Total Size: "
                   + (human_size(total) if human_readable else str(total)))


@s3.command("mb")
@click.argument("uri")
@click.pass_obj
def mb(settings: Settings, uri: str) -> None:
    """Make the bucket s3://BUCKET."""
    path = _bucket_only(uri)
    conn = _Connection(settings)
    # us-east-1 is the one region whose buckets must not name a LocationConstraint.
    extra = ({} if conn.region == "us-east-1" else
             {"CreateBucketConfiguration": {"LocationConstraint": conn.region}})
    with conn.translated(path):
        conn.client.create_bucket(Bucket=path.bucket, **extra)
    click.echo(f"make_bucket: {path.bucket}")


@s3.command("rb")
@click.argument("uri")
@click.option("--force", is_flag=True, help="Remove the bucket's objects first.")
@click.pass_obj
def rb(settings: Settings, uri: str, force: bool) -> None:
    """Remove the bucket s3://BUCKET (empty, unless --force)."""
    path = _bucket_only(uri)
    conn = _Connection(settings)
    if force:
        _remove_all(conn, path)
    else:
        # Checked here: SeaweedFS (the embedded store) deletes a bucket with its objects
        # where AWS answers BucketNotEmpty.
        with conn.translated(path):
            listed = conn.client.list_objects_v2(Bucket=path.bucket, MaxKeys=1)
        if listed.get("KeyCount", len(listed.get("Contents", []))):
            raise _not_empty(path.bucket)
    with conn.translated(path):
        conn.client.delete_bucket(Bucket=path.bucket)
    click.echo(f"remove_bucket: {path.bucket}")


@s3.command("rm")
@click.argument("uri")
@click.option("--recursive", "-r", is_flag=True,
              help="Every object below s3://BUCKET[/PREFIX] (taken as a folder).")
@click.pass_obj
def rm(settings: Settings, uri: str, recursive: bool) -> None:
    """Remove the object s3://BUCKET/KEY, or with --recursive every object below a prefix."""
    path = parse_uri(uri)
    if not recursive and not path.key:
        raise CliError(f"{uri!r} names no key: add --recursive to remove every object in "
                       "the bucket", ExitCode.USAGE)
    conn = _Connection(settings)
    if recursive:
        _remove_all(conn, path)
        return
    # DeleteObject succeeds on a missing key; the user most likely mistyped it.
    with conn.translated(path):
        conn.client.head_object(Bucket=path.bucket, Key=path.key)
        conn.client.delete_object(Bucket=path.bucket, Key=path.key)
    click.echo(f"delete: {path.uri}")


def _remove_all(conn: _Connection, path: S3Path) -> None:
    keys = [item["Key"] for page in conn.pages(path, path.folder)
            for item in page.get("Contents", [])]
    for start in range(0, len(keys), _DELETE_BATCH):
        batch = keys[start:start + _DELETE_BATCH]
        with conn.translated(path):
            answer = conn.client.delete_objects(Bucket=path.bucket, Delete={
                "Objects": [{"Key": key} for key in batch], "Quiet": False})
        for deleted in answer.get("Deleted", []):
            click.echo(f"delete: s3://{path.bucket}/{deleted['Key']}")
        for error in answer.get("Errors", [])[:1]:
            raise CliError(f"s3://{path.bucket}/{error.get('Key')}: {error.get('Code')}: "
                           f"{error.get('Message')}", ExitCode.PLATFORM)


@s3.command("cp")
@click.argument("source")
@click.argument("destination")
@click.option("--recursive", "-r", is_flag=True,
              help="Copy a folder, or every object below an s3:// prefix.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing for each copied file.")
@click.pass_obj
def cp(settings: Settings, source: str, destination: str, recursive: bool,
       quiet: bool) -> None:
    """Copy between a local file or folder (- for stdin or stdout) and s3://, or within S3.

    As with aws s3 cp, a destination key that is empty or ends in / takes the source's
    file name; with --recursive, the files below SOURCE keep their paths below DESTINATION.
    """
    for text in (source, destination):
        if "://" in text and not is_s3(text):
            raise CliError(f"{text!r} is neither an s3:// URI nor a local path",
                           ExitCode.USAGE)
    if not (is_s3(source) or is_s3(destination)):
        raise CliError("one of SOURCE and DESTINATION must be an s3:// URI", ExitCode.USAGE)
    if recursive and "-" in (source, destination):
        raise CliError("- (stdin or stdout) is one object: it does not go with --recursive",
                       ExitCode.USAGE)
    dst = parse_uri(destination) if is_s3(destination) else None
    if not is_s3(source):
        assert dst is not None
        # Local input is checked before the store is asked anything.
        items = _uploads(source, dst, recursive)
        conn = _Connection(settings)
    else:
        src = parse_uri(source)
        if not recursive and (not src.key or src.key.endswith("/")):
            raise CliError(f"{source!r} names no object: add --recursive to copy every "
                           "object below it", ExitCode.USAGE)
        conn = _Connection(settings)
        items = _from_s3(conn, src, destination, dst, recursive)
        if not items:
            click.echo(f"nothing to copy below {source}", err=True)
            return
    if dst is not None:
        conn.require_bucket(dst.bucket)
    with conn.transfers() as manager:
        submitted = []
        for item in items:
            with conn.translated(item.remote):
                submitted.append((item, item.submit(manager)))
        for item, future in submitted:
            with conn.translated(item.remote):
                future.result()
            if not quiet and destination != "-":
                click.echo(item.line)


class _Sequential:
    """Standard output as a stream that cannot seek: s3transfer then writes the parts in
    order (to a seekable one, such as a file opened with ``>>``, it writes them at offsets
    as they arrive)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def write(self, data: bytes) -> int:
        return self._stream.write(data)


@dataclass(frozen=True)
class _Transfer:
    """One file or object to move; ``remote`` is the s3:// side its errors name."""

    source: str | BinaryIO | S3Path
    target: str | _Sequential | S3Path
    remote: S3Path
    line: str

    def submit(self, manager: Any) -> Any:
        if not isinstance(self.source, S3Path):
            assert isinstance(self.target, S3Path)
            return manager.upload(self.source, self.target.bucket, self.target.key)
        if isinstance(self.target, S3Path):
            return manager.copy({"Bucket": self.source.bucket, "Key": self.source.key},
                                self.target.bucket, self.target.key)
        if isinstance(self.target, str):
            Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        return manager.download(self.source.bucket, self.source.key, self.target)


def _uploads(source: str, dst: S3Path, recursive: bool) -> list[_Transfer]:
    if source == "-":
        if not dst.key or dst.key.endswith("/"):
            raise CliError(f"{dst.uri!r} names no key to store stdin under", ExitCode.USAGE)
        stdin = sys.stdin.buffer
        return [_Transfer(stdin, dst, dst, f"upload: - to {dst.uri}")]
    local = Path(source)
    if not local.exists():
        raise CliError(f"no such file or folder: {source}", ExitCode.USAGE)
    if local.is_dir() and not recursive:
        raise CliError(f"{source} is a folder: add --recursive", ExitCode.USAGE)
    if not local.is_dir():
        if recursive:
            raise CliError(f"{source} is a file: --recursive copies a folder", ExitCode.USAGE)
        to = dst if dst.key and not dst.key.endswith("/") else dst.below(local.name)
        return [_Transfer(source, to, to, f"upload: {source} to {to.uri}")]
    items = []
    for relative, path in _files(local):
        to = dst.below(relative)
        items.append(_Transfer(str(path), to, to, f"upload: {path} to {to.uri}"))
    return items


def _from_s3(conn: _Connection, src: S3Path, destination: str, dst: S3Path | None,
             recursive: bool) -> list[_Transfer]:
    if destination == "-":
        return [_Transfer(src, _Sequential(sys.stdout.buffer), src, "")]
    if not recursive:
        name = src.key.rsplit("/", 1)[-1]
        if dst is None:
            target = _local_target(destination, name)
            return [_Transfer(src, str(target), src, f"download: {src.uri} to {target}")]
        to = dst if dst.key and not dst.key.endswith("/") else dst.below(name)
        return [_Transfer(src, to, src, f"copy: {src.uri} to {to.uri}")]
    items = []
    for key in conn.objects(src):
        relative = key[len(src.folder):]
        item = S3Path(src.bucket, key)
        if dst is not None:
            to = dst.below(relative)
            items.append(_Transfer(item, to, item, f"copy: {item.uri} to {to.uri}"))
            continue
        parts = PurePosixPath(relative).parts
        if relative.startswith("/") or ".." in parts:
            # Keys are any string: "../x" would write outside the folder the user named.
            raise CliError(f"{item.uri}: its key would land outside {destination}; "
                           "nothing was copied", ExitCode.USAGE)
        target = Path(destination).joinpath(*parts)
        items.append(_Transfer(item, str(target), item, f"download: {item.uri} to {target}"))
    return items


def _files(root: Path) -> Iterator[tuple[str, Path]]:
    """``(posix relative path, path)`` of the files below ``root``, sorted; links to
    folders are not followed (a link back up would never end)."""
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_file():
                yield path.relative_to(root).as_posix(), path


def _local_target(destination: str, name: str) -> Path:
    """A folder (existing, or written with a trailing /) takes the object's name."""
    target = Path(destination)
    if destination.endswith(("/", os.sep)) or target.is_dir():
        return target / name
    return target
