"""Tarballs in and out of the contract, safely.

Extraction refuses any member that would land outside the destination: absolute paths,
``..`` components, and symlinks or hard links whose target leaves the folder (AWS's toolkit
calls ``extractall`` with no filtering). Creation writes to a temporary name in the same
folder and renames it into place, so a reader never sees half an archive.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath

from shipyard.errors import UnsafeArchiveError

#: How much lower than its parent an archive worker (:func:`main`) runs, as ``nice`` counts
#: (where the idle scheduling class is not to be had).
ARCHIVE_WORKER_NICENESS = 19


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise UnsafeArchiveError(f"archive member {member.name!r} escapes the destination")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(f"archive member {member.name!r} is not a file, folder or link")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        base = PurePosixPath(*name.parts[:-1]) if member.issym() else PurePosixPath()
        target = os.path.normpath(str(dest / base / link))
        if link.is_absolute() or not (target == str(dest) or target.startswith(str(dest) + os.sep)):
            raise UnsafeArchiveError(
                f"archive member {member.name!r} links outside the destination ({member.linkname})"
            )


def check_archive(path: Path, dest: Path) -> list[tarfile.TarInfo]:
    """Validate every member without extracting; raises ``UnsafeArchiveError``."""
    dest = dest.resolve()
    try:
        with tarfile.open(path, mode="r:*") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeArchiveError(f"{path} is not a readable tar archive: {exc}") from exc
    for member in members:
        _check_member(member, dest)
    return members


def safe_extract(path: Path, dest: Path) -> None:
    """Extract ``path`` (tar, tar.gz) into ``dest`` after checking every member."""
    dest.mkdir(parents=True, exist_ok=True)
    check_archive(path, dest)
    with tarfile.open(path, mode="r:*") as tar:
        # The data filter (3.12+, backported to 3.10.12/3.11.4) is a second line of defence:
        # it resolves links already extracted (``s -> .`` then ``t -> s/../x``), which the
        # member-by-member check above cannot see.
        try:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest.resolve(), filter="data")
            else:  # pragma: no cover - old patch releases
                tar.extractall(dest.resolve())
        except (tarfile.TarError, EOFError) as exc:
            # tarfile.FilterError (a link escaping) is a TarError; so is a corrupt stream.
            raise UnsafeArchiveError(f"archive {path}: {exc}") from exc


def make_tar_gz(source_dir: Path, dest_file: Path, compresslevel: int = 6) -> Path:
    """Pack the contents of ``source_dir`` (not the folder itself) into ``dest_file``.

    Written as ``.<name>.partial`` beside the destination and renamed into place. Entries are
    sorted so the same tree gives the same member order.
    """
    dest_file.parent.mkdir(parents=True, exist_ok=True)
    partial = dest_file.with_name(f".{dest_file.name}.partial")
    try:
        with tarfile.open(partial, mode="w:gz", compresslevel=compresslevel) as tar:
            if source_dir.is_dir():
                for entry in sorted(source_dir.iterdir()):
                    tar.add(entry, arcname=entry.name)
        os.replace(partial, dest_file)
    finally:
        if partial.exists():
            partial.unlink()
    return dest_file


def main(argv: list[str] | None = None) -> int:
    """``python -m shipyard.contract.archives check|extract ARCHIVE DEST``, at a lower CPU
    priority: how a server checks or unpacks a big archive without its own time."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in ("check", "extract"):
        print("usage: python -m shipyard.contract.archives check|extract ARCHIVE DEST",
              file=sys.stderr)
        return 2
    # Decompressing is the caller's background work: whatever answers requests goes first.
    # SCHED_IDLE runs only on CPU time nothing else wants; nice 19 still takes ~1.5% of a CPU
    # share per worker from the server, and twenty workers would take a fifth of it.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(ARCHIVE_WORKER_NICENESS)
    operation, path, dest = args[0], Path(args[1]), Path(args[2])
    try:
        if operation == "check":
            check_archive(path, dest)
        else:
            safe_extract(path, dest)
    except UnsafeArchiveError as exc:
        sys.stderr.write(exc.message)
        return 1
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
