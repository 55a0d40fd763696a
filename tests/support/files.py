"""Files the tests lay out and read back: folders of files, gzipped tarballs."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping
from pathlib import Path


def _bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Write each file (by path relative to ``root``, folders made as needed); returns root."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(_bytes(data))
    return root


def read_tree(root: Path, *, symlinks: bool = True) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its contents (links to files too,
    unless ``symlinks`` is false)."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and (symlinks or not path.is_symlink())
    }


def tar_gz(files: Mapping[str, str | bytes], *, compresslevel: int = 9) -> bytes:
    """A gzipped tarball of regular files, members named as given (unchecked: a test may
    want a name that escapes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=compresslevel) as tar:
        for member, data in files.items():
            raw = _bytes(data)
            info = tarfile.TarInfo(member)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buffer.getvalue()


def write_tar_gz(path: Path, files: Mapping[str, str | bytes], *,
                 compresslevel: int = 9) -> Path:
    """:func:`tar_gz` written to ``path``; returns path."""
    path.write_bytes(tar_gz(files, compresslevel=compresslevel))
    return path


def tar_files(path: Path) -> dict[str, bytes]:
    """The regular files of a tarball (a job's ``model.tar.gz``), by member name."""
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def model_tarball(folder: Path, name: str, files: Mapping[str, str | bytes]) -> Path:
    """``<folder>/<name>.tar.gz`` holding ``files``: a ``ModelDataUrl`` to point at."""
    return write_tar_gz(folder / f"{name}.tar.gz", files)
