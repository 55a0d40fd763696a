"""A job's artifacts: the output and model locations its record names, what lies there, and
downloads streamed from the S3 store (the plane's own client) or a local folder.

A download names its object by URI (``?uri=``) and is refused (403) unless the object lies
in one of the job's own output locations:

- training: ``{S3OutputPath}/{TrainingJobName}/`` (where SageMaker writes ``model.tar.gz``
  and ``output.tar.gz``) and ``ModelArtifacts.S3ModelArtifacts``;
- processing: each ``ProcessingOutputConfig.Outputs[].S3Output.S3Uri``;
- transform: ``TransformOutput.S3OutputPath``.

A local location (``file://`` or a plain path) must besides pass the platform's
``file_roots`` rule (``control.confinement``) on its resolved path, and the file opened must
be the file checked (no symbolic link swapped in between). Objects and files are sent in
chunks as they are read, never whole, as attachments.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from shipyard import kinds
from shipyard.console.context import PageContext
from shipyard.console.http import Download, Response
from shipyard.control.artifacts import MODEL_ARCHIVE, training_output_uris
from shipyard.control.locations import local_path
from shipyard.control.s3 import S3Location, iter_regular_files, parse_s3_uri
from shipyard.errors import ResourceNotFound, StorageError, ValidationError

__all__ = ["CHUNK_BYTES", "MAX_LISTED", "Output", "allowed", "download", "files", "link",
           "outputs"]

#: Read and send size of a download.
CHUNK_BYTES = 256 * 1024
#: Objects a location's listing shows.
MAX_LISTED = 1000


@dataclass(frozen=True)
class Output:
    """One of a job's own output locations."""

    #: What it is: "model artifact", "output", a processing output's name.
    label: str
    #: A folder (an S3 prefix) or, ``single``, one object.
    uri: str
    single: bool = False


def outputs(spec: kinds.Kind, record: dict[str, Any]) -> list[Output]:
    """The job's own output locations, as its record names them."""
    found: list[Output] = []
    if spec is kinds.TRAINING:
        config = record.get("OutputDataConfig") or {}
        path, name = config.get("S3OutputPath"), record.get("TrainingJobName")
        if isinstance(path, str) and path and isinstance(name, str):
            with contextlib.suppress(ValidationError):  # a path no job could have written
                model = training_output_uris(path, name)[0]
                found.append(Output("output", model[:-len("output/" + MODEL_ARCHIVE)]))
        artifact = (record.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if isinstance(artifact, str) and artifact:
            # With CompressionType NONE the model is uploaded file by file below it.
            found.append(Output("model artifact", artifact,
                                single=config.get("CompressionType") != "NONE"))
    elif spec is kinds.PROCESSING:
        for item in (record.get("ProcessingOutputConfig") or {}).get("Outputs") or []:
            uri = (item.get("S3Output") or {}).get("S3Uri")
            if isinstance(uri, str) and uri:
                found.append(Output(str(item.get("OutputName") or "output"), uri))
    elif spec is kinds.TRANSFORM:
        uri = (record.get("TransformOutput") or {}).get("S3OutputPath")
        if isinstance(uri, str) and uri:
            found.append(Output("output", uri))
    return found


def link(base: str, spec: kinds.Kind, name: str, output: Output) -> str:
    """The console path that downloads ``output`` (one object) or lists it (a folder)."""
    action = "download" if output.single else "files"
    return f"{base}/jobs/{spec.key}/{quote(name, safe='')}/{action}?uri={quote(output.uri)}"


# -- the check ----------------------------------------------------------------------------------
def allowed(ctx: PageContext, found: list[Output], uri: str) -> bool:
    """Whether ``uri`` names something inside one of ``found``."""
    if uri.startswith("s3://"):
        loc = parse_s3_uri(uri)
        if any(part in (".", "..") for part in loc.key.split("/")):
            return False
        return any(_s3_within(loc, o) for o in found if o.uri.startswith("s3://"))
    real = ctx.plane.ctx.file_roots.path(uri, "download")
    for output in found:
        try:
            folder = Path(os.path.realpath(local_path(output.uri)))
        except ValidationError:  # an s3:// location, or one no job could have written
            continue
        if (real == folder) if output.single else (real == folder or folder in real.parents):
            return True
    return False


def _s3_within(loc: S3Location, output: Output) -> bool:
    root = parse_s3_uri(output.uri)
    if root.bucket != loc.bucket:
        return False
    if output.single:
        return loc.key == root.key
    prefix = root.key.rstrip("/")
    return not prefix or loc.key.startswith(prefix + "/")


def _uri(ctx: PageContext) -> str:
    uri = ctx.request.query.get("uri", "")
    if not uri:
        raise ValidationError("Name a location: ?uri=")
    return uri


def _refused(ctx: PageContext, uri: str, name: str) -> Response:
    return ctx.render("error.html", 403, status_code=403, message=(
        f"Refused: {uri} is not inside an output location of {name}"))


# -- listing ------------------------------------------------------------------------------------
def files(ctx: PageContext, spec: kinds.Kind, name: str, record: dict[str, Any]) -> Response:
    """What lies in one of the job's output locations (``?uri=``), each with its download
    link."""
    found, uri = outputs(spec, record), _uri(ctx)
    if not any(o.uri == uri for o in found):
        return _refused(ctx, uri, name)
    entries: list[tuple[str, str, int]] = []  # (shown name, URI, size)
    if uri.startswith("s3://"):
        root = parse_s3_uri(uri).key.rstrip("/")
        for obj in ctx.plane.ctx.s3.list_objects(uri.rstrip("/") + "/")[:MAX_LISTED]:
            entries.append((obj.key[len(root):].lstrip("/"),
                            f"s3://{parse_s3_uri(uri).bucket}/{obj.key}", obj.size))
    else:
        folder = ctx.plane.ctx.file_roots.path(uri, "listing")
        for relative, path in itertools.islice(iter_regular_files(folder), MAX_LISTED):
            with contextlib.suppress(OSError):  # removed meanwhile
                entries.append((relative, path.as_uri(), path.stat().st_size))
    return ctx.render("files.html", spec=spec, name=name, uri=uri, entries=entries,
                      limit=MAX_LISTED, quote=quote)


# -- downloads ----------------------------------------------------------------------------------
def download(ctx: PageContext, spec: kinds.Kind, name: str, record: dict[str, Any]
             ) -> Response:
    """The object or file ``?uri=`` names, once it lies in one of the job's outputs."""
    found, uri = outputs(spec, record), _uri(ctx)
    if not allowed(ctx, found, uri):
        return _refused(ctx, uri, name)
    if uri.startswith("s3://"):
        return _s3_download(ctx, uri)
    return _file_download(ctx, uri)


def _s3_download(ctx: PageContext, uri: str) -> Response:
    loc = parse_s3_uri(uri)
    with _s3_errors(uri):
        answer = ctx.plane.ctx.s3.client.get_object(Bucket=loc.bucket, Key=loc.key)
    body = answer["Body"]

    def chunks() -> Iterator[bytes]:
        with _s3_errors(uri):
            yield from body.iter_chunks(CHUNK_BYTES)

    return Download.attachment(loc.key.rsplit("/", 1)[-1], chunks(), body.close,
                               int(answer.get("ContentLength") or 0) or None)


@contextlib.contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    """botocore's errors as Shipyard's: a missing object 404, anything else the store's."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchKey", "NoSuchBucket", "404"):
            raise ResourceNotFound(f"No object at {uri}") from exc
        raise StorageError(f"{uri}: {code or exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"{uri}: {exc}") from exc


def _file_download(ctx: PageContext, uri: str) -> Response:
    real = ctx.plane.ctx.file_roots.path(uri, "download")
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ResourceNotFound(f"No file at {uri}") from None
    except OSError as exc:
        raise StorageError(f"{uri}: {exc.strerror or exc}") from exc
    stream: BinaryIO = os.fdopen(fd, "rb")
    try:
        info = os.fstat(fd)
        opened = Path(f"/proc/self/fd/{fd}")
        # The file opened is the one checked: no component became a link meanwhile.
        if not stat.S_ISREG(info.st_mode) or (
                opened.exists() and Path(os.path.realpath(opened)) != real):
            raise ResourceNotFound(f"No file at {uri}")
    except BaseException:
        stream.close()
        raise

    def chunks() -> Iterator[bytes]:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk

    return Download.attachment(real.name, chunks(), stream.close, info.st_size)

