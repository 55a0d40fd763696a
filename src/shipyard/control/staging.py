"""Staging input data (training channels, processing inputs) into host paths to mount.

SageMaker's File input mode copies a channel's data onto each instance's volume before the
container starts and mounts it at ``/opt/ml/input/data/<channel>`` (processing inputs at
their ``LocalPath``). Shipyard does the same, on one machine, with these rules:

* **Local path or ``file://``** (SDK local mode's ``FileDataSource``): a folder is mounted as
  is, read-only, with no copy. A single file is hard-linked (or copied) into a staging
  folder, so the container sees a folder holding that one file.
* **``s3://`` + ``S3Prefix``**: every object whose key starts with the prefix. Its path in the
  channel is the key after the prefix, when the prefix names a whole folder (it ends in ``/``
  or the key continues with ``/``) or the whole object (the file keeps its base name); keys
  that only share a partial name (prefix ``data/tr`` matching ``data/train/a.csv``) keep their
  path after the prefix's last ``/`` (``train/a.csv``). Folder markers (keys ending in ``/``)
  are skipped. No matching object is an error, as in SageMaker.
* **``ManifestFile``**: a JSON list ``[{"prefix": "s3://b/p/"}, "rel1", "rel2", ...]``; each
  entry is the object ``prefix + rel`` and lands at ``rel``. An ``s3://`` manifest must point
  at ``s3://`` data; a local manifest may point at local or ``s3://`` data.
* **Distribution**: ``FullyReplicated`` gives every host the same folder (downloaded once,
  mounted read-only by all). ``ShardedByS3Key`` sorts the channel's files by their path in the
  channel and gives host ``i`` (0-based position in ``hosts``) the files whose index ``% N ==
  i``; each host gets its own folder, possibly empty when there are fewer files than hosts.

Layout under the caller's ``staging_dir`` (``<job dir>/staging/<channel>``): ``shared/``
for data every host mounts, ``<host>/`` for a host's shard. Downloads are concurrent and
land under temporary names; on failure the staged folders are removed again.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shipyard.control.confinement import FileRoots
from shipyard.control.locations import local_path
from shipyard.control.s3 import S3Client, S3Location, iter_regular_files, parse_s3_uri
from shipyard.errors import DataSourceError, ShipyardError, StorageError, ValidationError

__all__ = [
    "DATA_TYPES",
    "DISTRIBUTIONS",
    "StagedPath",
    "link_or_copy",
    "local_path_from_uri",
    "prefix_relative_path",
    "stage_input",
]

DATA_TYPES = ("S3Prefix", "ManifestFile")
DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")
SHARED_DIR = "shared"


@dataclass(frozen=True)
class StagedPath:
    """A host folder to mount at the channel's path; ``copied`` if we made it."""

    host_path: Path
    copied: bool
    #: ``(s3:// URI, path in the folder)`` of objects left for the container's node to fetch
    #: (``on_nodes``): the folder holds everything else.
    fetch: tuple[tuple[str, str], ...] = ()


def private_copies(staged: dict[str, StagedPath]) -> bool:
    """Every host has a copy of the data made for it alone, which its container may change
    as it may on SageMaker (the instance's own volume): SDK v3's drivers ``chmod`` and unpack
    code in place. A user's own folder, or one copy shared by several hosts, is mounted
    read-only instead."""
    paths = [p.host_path for p in staged.values()]
    return all(p.copied for p in staged.values()) and len(set(paths)) == len(paths)


@dataclass(frozen=True)
class _Entry:
    """One file of a channel: where it lands (``rel``) and where it comes from."""

    rel: str
    s3_uri: str | None = None
    local: Path | None = None


def stage_input(
    source_uri: str,
    data_type: str,
    distribution: str,
    hosts: list[str],
    staging_dir: Path,
    s3: S3Client | None = None,
    *,
    roots: FileRoots | None = None,
    on_nodes: bool = False,
) -> dict[str, StagedPath]:
    """Stage one channel or processing input; returns, per host, the folder to mount.

    ``roots`` confines local data, a local manifest's entries included (the control plane
    always passes its own; None is for callers that stage only what they wrote themselves).
    ``on_nodes``: ``s3://`` objects are not downloaded but listed in each host's
    :attr:`StagedPath.fetch`, for a runtime whose nodes fetch them themselves.
    Raises ``DataSourceError`` when the data is missing or unreadable, ``ValidationError``
    for an unknown data type or distribution or a refused location, ``StorageError`` when
    staging cannot write.
    """
    if data_type not in DATA_TYPES:
        raise ValidationError(f"S3DataType {data_type!r} is not supported (use {DATA_TYPES})")
    if distribution not in DISTRIBUTIONS:
        raise ValidationError(
            f"S3DataDistributionType {distribution!r} is not one of {DISTRIBUTIONS}"
        )
    if not hosts:
        raise ValidationError("at least one host is needed to stage input data")

    if not source_uri.startswith("s3://") and data_type == "S3Prefix":
        source = local_path_from_uri(source_uri, roots)
        if source.is_dir() and distribution == "FullyReplicated":
            return {host: StagedPath(source, copied=False) for host in hosts}
        entries = _local_entries(source)
    elif source_uri.startswith("s3://") and data_type == "S3Prefix":
        entries = _prefix_entries(source_uri, _need_s3(s3, source_uri))
    else:
        entries = _manifest_entries(source_uri, s3, roots)

    _check_layout(source_uri, entries)
    if any(entry.s3_uri for entry in entries):
        _need_s3(s3, source_uri)
    folders = (
        [staging_dir / SHARED_DIR]
        if distribution == "FullyReplicated"
        else [staging_dir / host for host in hosts]
    )
    for folder in folders:
        # Never write into (or clean up) a folder holding someone else's files.
        if folder.is_dir() and any(folder.iterdir()):
            raise StorageError(f"staging folder {folder} is not empty")
    try:
        return _materialize(entries, distribution, hosts, staging_dir, s3 if not on_nodes
                            else None)
    except ShipyardError:
        _remove(folders)
        raise
    except OSError as exc:
        _remove(folders)
        raise StorageError(f"cannot stage {source_uri} into {staging_dir}: {exc}") from exc


def local_path_from_uri(uri: str, roots: FileRoots | None = None) -> Path:
    """The absolute host path named by a ``file://`` URI or a plain path; it must be readable.

    With ``roots``, the path is the resolved one, once ``roots`` allows it.
    """
    path = local_path(uri) if roots is None else roots.path(uri, "input")
    if not path.exists():
        raise DataSourceError(f"{uri}: no such file or folder")
    mode = os.R_OK | (os.X_OK if path.is_dir() else 0)
    if not os.access(path, mode):
        raise DataSourceError(f"{uri}: not readable")
    return path




def link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link ``source`` to ``dest``, copying when a link is impossible (other device)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES):
            raise
        shutil.copy2(source, dest)


# -- listing what a channel holds --------------------------------------------------------


def _need_s3(s3: S3Client | None, uri: str) -> S3Client:
    if s3 is None:
        raise ValidationError(f"{uri}: S3 data needs an S3 client (no S3 endpoint configured)")
    return s3


def _local_entries(source: Path) -> list[_Entry]:
    if source.is_file():
        return [_Entry(rel=source.name, local=source)]
    return [_Entry(rel=rel, local=path) for rel, path in iter_regular_files(source)]


def prefix_relative_path(prefix: str, key: str) -> str:
    """Where the object ``key`` lands in a channel staged from key prefix ``prefix``."""
    if key == prefix:
        return PurePosixPath(key).name
    rest = key[len(prefix) :]
    if prefix == "" or prefix.endswith("/") or rest.startswith("/"):
        return rest.lstrip("/")
    return key[prefix.rfind("/") + 1 :]


def _prefix_entries(uri: str, s3: S3Client) -> list[_Entry]:
    loc = parse_s3_uri(uri)
    objects = s3.list_objects(uri)
    if not objects:
        raise DataSourceError(f"{uri}: no objects found under this prefix")
    return [
        _Entry(
            rel=prefix_relative_path(loc.key, obj.key), s3_uri=S3Location(loc.bucket, obj.key).uri
        )
        for obj in objects
    ]


def _manifest_entries(uri: str, s3: S3Client | None, roots: FileRoots | None
                      ) -> list[_Entry]:
    if uri.startswith("s3://"):
        raw = _need_s3(s3, uri).read_bytes(uri)
    else:
        path = local_path_from_uri(uri, roots)
        if not path.is_file():
            raise DataSourceError(f"{uri}: a manifest must be a file")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataSourceError(f"{uri}: cannot read the manifest: {exc}") from exc
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataSourceError(f"{uri}: the manifest is not valid JSON: {exc}") from exc
    if (
        not isinstance(doc, list)
        or not doc
        or not isinstance(doc[0], dict)
        or not isinstance(doc[0].get("prefix"), str)
        or not all(isinstance(item, str) and item for item in doc[1:])
    ):
        raise DataSourceError(
            f'{uri}: a manifest is a JSON list [{{"prefix": "s3://bucket/prefix/"}}, "rel", ...]'
        )
    prefix: str = doc[0]["prefix"]
    rels: list[str] = doc[1:]
    if not rels:
        raise DataSourceError(f"{uri}: the manifest lists no objects")
    if prefix.startswith("s3://"):
        parse_s3_uri(prefix)
        return [_Entry(rel=rel, s3_uri=prefix + rel) for rel in rels]
    if uri.startswith("s3://"):
        raise DataSourceError(f"{uri}: an S3 manifest must point at s3:// data, not {prefix!r}")
    # The prefix is joined as a string, like S3's, so it may end mid-name.
    base = str(local_path(prefix)) + ("/" if prefix.endswith("/") else "")
    return [_Entry(rel=rel, local=_manifest_local_file(uri, base + rel, rel, roots))
            for rel in rels]


def _manifest_local_file(uri: str, name: str, rel: str, roots: FileRoots | None) -> Path:
    # A manifest's entries are only known now: they are confined here, not at create time.
    path = Path(name) if roots is None else roots.path(name, f"{uri}: manifest entry")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise DataSourceError(f"{uri}: manifest entry {rel!r} is not a readable file ({path})")
    return path


def _check_layout(uri: str, entries: Iterable[_Entry]) -> None:
    """Refuse paths that would leave the channel folder or land twice on the same file."""
    seen: set[PurePosixPath] = set()
    for entry in entries:
        path = PurePosixPath(entry.rel)
        if not path.parts or path.is_absolute() or ".." in path.parts or entry.rel.endswith("/"):
            raise DataSourceError(f"{uri}: {entry.rel!r} is not a usable file path in a channel")
        if path in seen:
            raise DataSourceError(f"{uri}: two objects would land at {entry.rel!r}")
        seen.add(path)
    for path in seen:
        for parent in path.parents:
            if parent in seen:
                raise DataSourceError(f"{uri}: {parent} is both a file and a folder")


# -- writing the staged folders ----------------------------------------------------------


def _materialize(
    entries: list[_Entry],
    distribution: str,
    hosts: list[str],
    staging_dir: Path,
    s3: S3Client | None,
) -> dict[str, StagedPath]:
    """Fill the folders; with no ``s3`` client, the ``s3://`` objects are left to fetch."""
    if distribution == "FullyReplicated":
        shared = staging_dir / SHARED_DIR
        fetch = _fill(shared, entries, s3)
        return {host: StagedPath(shared, copied=True, fetch=fetch) for host in hosts}
    ordered = sorted(entries, key=lambda entry: entry.rel)
    result: dict[str, StagedPath] = {}
    for index, host in enumerate(hosts):
        folder = staging_dir / host
        fetch = _fill(folder, ordered[index :: len(hosts)], s3)
        result[host] = StagedPath(folder, copied=True, fetch=fetch)
    return result


def _fill(folder: Path, entries: list[_Entry], s3: S3Client | None
          ) -> tuple[tuple[str, str], ...]:
    folder.mkdir(parents=True, exist_ok=True)
    downloads: list[tuple[str, Path]] = []
    left: list[tuple[str, str]] = []
    for entry in entries:
        dest = folder / entry.rel
        if entry.local is not None:
            link_or_copy(entry.local, dest)
        else:
            assert entry.s3_uri is not None
            downloads.append((entry.s3_uri, dest))
            left.append((entry.s3_uri, entry.rel))
    if downloads and s3 is not None:
        s3.download_many(downloads)
        return ()
    return tuple(left)


def _remove(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
