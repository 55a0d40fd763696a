"""Job outputs: packing model and output folders and delivering them to their destination.

Rules implemented (AWS "How SageMaker Processes Training Output", CreateTrainingJob and
CreateProcessingJob docs, SDK local mode ``retrieve_artifacts``):

* Training: ``/opt/ml/model`` becomes ``model.tar.gz`` and ``/opt/ml/output/data`` becomes
  ``output.tar.gz``, both under ``{S3OutputPath}/{TrainingJobName}/output/``. With
  ``OutputDataConfig.CompressionType = NONE`` the model folder is uploaded file by file instead.
* Multi-host training: every host's model folder is aggregated into one; hosts must not write
  the same file. Shipyard keeps the first host's (``algo-1``) copy and reports the clash.
* Processing: each output folder is uploaded file by file below its ``S3Output.S3Uri`` (no job
  name added); symbolic links are not followed.

Destinations are ``s3://`` URIs, ``file://`` URIs or plain paths. A local destination never
shows a half-written file: archives are written under a temporary name and renamed; folder
copies are built in a temporary sibling folder whose files are then renamed into place.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shipyard.contract.archives import make_tar_gz
from shipyard.control.locations import local_path
from shipyard.control.s3 import S3Client, iter_regular_files, parse_s3_uri
from shipyard.control.staging import link_or_copy
from shipyard.errors import ShipyardError, StorageError, ValidationError

__all__ = [
    "MODEL_ARCHIVE",
    "OUTPUT_ARCHIVE",
    "merge_dirs",
    "pack_and_upload",
    "training_output_uris",
    "upload_dir",
]

log = logging.getLogger(__name__)

MODEL_ARCHIVE = "model.tar.gz"
OUTPUT_ARCHIVE = "output.tar.gz"


def training_output_uris(s3_output_path: str, job_name: str) -> tuple[str, str]:
    """``({path}/{job}/output/model.tar.gz, {path}/{job}/output/output.tar.gz)``.

    Works for ``s3://`` and ``file://`` URIs and plain paths, with or without a trailing ``/``.
    """
    if not s3_output_path:
        raise ValidationError("S3OutputPath must not be empty")
    if s3_output_path.startswith("s3://"):
        loc = parse_s3_uri(s3_output_path)
        key = loc.key.rstrip("/")
        prefix = f"s3://{loc.bucket}/{key + '/' if key else ''}{job_name}/output/"
    else:
        folder = local_path(s3_output_path) / job_name / "output"
        prefix = (folder.as_uri() if s3_output_path.startswith("file:") else str(folder)) + "/"
    return prefix + MODEL_ARCHIVE, prefix + OUTPUT_ARCHIVE


def pack_and_upload(
    source_dir: Path, dest_uri: str, s3: S3Client | None = None, *, compress: bool = True
) -> str:
    """Pack ``source_dir``'s contents into a tar.gz at ``dest_uri``; returns ``dest_uri``.

    With ``compress=False`` (CompressionType NONE) ``dest_uri`` is a prefix or folder and the
    files are delivered one by one, as ``upload_dir`` does.
    """
    if not compress:
        upload_dir(source_dir, dest_uri, s3)
        return dest_uri
    if dest_uri.startswith("s3://"):
        client = _need_s3(s3, dest_uri)
        with tempfile.TemporaryDirectory(prefix="shipyard-pack-") as scratch:
            archive = _pack(source_dir, Path(scratch) / MODEL_ARCHIVE)
            client.upload_file(archive, dest_uri)
        return dest_uri
    dest = local_path(dest_uri)
    if dest.is_dir():
        raise StorageError(f"{dest_uri}: is a folder, not an archive name")
    # make_tar_gz writes a temporary name beside the destination and renames it into place.
    _pack(source_dir, dest)
    return dest_uri


def upload_dir(source_dir: Path, dest_uri: str, s3: S3Client | None = None) -> list[str]:
    """Deliver every regular file under ``source_dir`` below ``dest_uri``; returns their URIs.

    Symbolic links are skipped. A missing ``source_dir`` delivers nothing.
    """
    if not source_dir.is_dir():
        return []
    if dest_uri.startswith("s3://"):
        return _need_s3(s3, dest_uri).upload_dir(source_dir, dest_uri)
    dest = local_path(dest_uri)
    files = list(iter_regular_files(source_dir))
    if not files:
        return []
    with _storage_errors(dest_uri):
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _temp_sibling(dest) as temp:
            for rel, path in files:
                target = temp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            # Make every folder first, so a clash there fails before any file is delivered.
            for parent in sorted({(dest / rel).parent for rel, _ in files}):
                parent.mkdir(parents=True, exist_ok=True)
            for rel, _ in files:
                os.replace(temp / rel, dest / rel)
    base = dest_uri.rstrip("/")
    return [f"{base}/{rel}" for rel, _ in files]


def merge_dirs(sources: list[Path], dest: Path) -> list[str]:
    """Merge host folders into ``dest`` in order; returns the clashing relative paths.

    The first source (``algo-1``) wins a clash: a later host's file at a path already taken
    (or a file where an earlier host has a folder, or the reverse) is left out and reported.
    Symbolic links are copied as links. Missing sources are skipped.
    """
    clashes: list[str] = []
    with _storage_errors(str(dest)):
        # A supervisor resumed after a crash merges again: what the last one merged is not
        # another host's copy.
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True, exist_ok=True)
        for source in sources:
            if not source.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(source):
                base = Path(dirpath)
                rel_dir = base.relative_to(source)
                # Links to folders are copied as links, like links to files, never followed.
                entries = sorted([*filenames, *(d for d in dirnames if (base / d).is_symlink())])
                dirnames[:] = sorted(d for d in dirnames if not (base / d).is_symlink())
                for name in list(dirnames):
                    target = dest / rel_dir / name
                    if target.is_symlink() or (target.exists() and not target.is_dir()):
                        clashes.append((rel_dir / name).as_posix())
                        dirnames.remove(name)
                    else:
                        target.mkdir(exist_ok=True)
                for name in entries:
                    target = dest / rel_dir / name
                    if target.exists() or target.is_symlink():
                        clashes.append((rel_dir / name).as_posix())
                    else:
                        _copy_entry(base / name, target)
    for rel in clashes:
        log.warning("hosts wrote the same path %s; keeping the first host's copy", rel)
    return clashes


def _copy_entry(source: Path, target: Path) -> None:
    if source.is_symlink():
        os.symlink(os.readlink(source), target)
    else:
        link_or_copy(source, target)


# -- helpers -------------------------------------------------------------------------------


def _need_s3(s3: S3Client | None, uri: str) -> S3Client:
    if s3 is None:
        raise ValidationError(f"{uri}: S3 output needs an S3 client (no S3 endpoint configured)")
    return s3




def _pack(source_dir: Path, dest: Path) -> Path:
    with _storage_errors(str(dest)):
        return make_tar_gz(source_dir, dest)


@contextmanager
def _temp_sibling(dest: Path) -> Iterator[Path]:
    temp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.partial"
    temp.mkdir()
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def _storage_errors(target: str) -> Iterator[None]:
    try:
        yield
    except ShipyardError:
        raise
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise StorageError(f"cannot write {target}{where}: {exc.strerror or exc}") from exc
