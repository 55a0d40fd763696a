"""Archives checked and unpacked by a worker process answer exactly as inline ones do."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from shipyard.contract import archives
from shipyard.control import unpack
from shipyard.errors import UnsafeArchiveError


def _tar(path: Path, members: dict[str, bytes], link: tuple[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link[0])
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tar.addfile(info)
    return path


@pytest.mark.parametrize("inline_bytes", [unpack.INLINE_BYTES, 0], ids=["inline", "worker"])
def test_a_good_archive_is_extracted(tmp_path: Path, inline_bytes: int) -> None:
    archive = _tar(tmp_path / "code.tar.gz", {"train.py": b"print(1)\n", "pkg/m.py": b"x = 1\n"})
    unpack.check_archive(archive, tmp_path / "dest", inline_bytes)
    unpack.safe_extract(archive, tmp_path / "dest", inline_bytes)
    assert (tmp_path / "dest" / "pkg" / "m.py").read_bytes() == b"x = 1\n"


@pytest.mark.parametrize("inline_bytes", [unpack.INLINE_BYTES, 0], ids=["inline", "worker"])
@pytest.mark.parametrize("members, link", [
    ({"../escape.py": b"x"}, None),
    ({"ok.py": b"x"}, ("evil", "/etc/passwd")),
], ids=["dot-dot", "absolute-link"])
def test_an_unsafe_archive_gets_the_same_error_either_way(
        tmp_path: Path, inline_bytes: int, members: dict[str, bytes],
        link: tuple[str, str] | None) -> None:
    archive = _tar(tmp_path / "bad.tar.gz", members, link)
    with pytest.raises(UnsafeArchiveError) as inline:
        archives.check_archive(archive, tmp_path / "dest")
    with pytest.raises(UnsafeArchiveError) as got:
        unpack.safe_extract(archive, tmp_path / "dest", inline_bytes)
    assert got.value.message == inline.value.message
    assert not (tmp_path / "escape.py").exists()


def test_a_file_that_is_no_archive_is_refused_by_the_worker(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(UnsafeArchiveError, match="is not a readable tar archive"):
        unpack.check_archive(junk, tmp_path / "dest", inline_bytes=0)
