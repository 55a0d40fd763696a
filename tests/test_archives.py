"""Tarballs: extraction refuses anything that would land outside its folder; creation is atomic.

Archives are built member by member with ``tarfile.TarInfo`` so each hostile shape is exact.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.contract.archives import check_archive, make_tar_gz, safe_extract
from shipyard.errors import UnsafeArchiveError, ValidationError


def _file(name: str, data: bytes = b"data") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
         mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:  # type: ignore[call-overload]
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Path]:
    """A folder holding the archive and the destination, so escapes land inside it."""
    (tmp_path / "dest").mkdir()
    yield tmp_path


def _everything(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


HOSTILE = {
    "absolute-path": [_file("/tmp/shipyard-escape-abs")],
    "dot-dot": [_file("../escape")],
    "inner-dot-dot": [_dir("a"), _file("a/../../escape")],
    "symlink-relative-escape": [_link("link", "../escape")],
    "nested-symlink-escape": [_dir("sub"), _link("sub/link", "../../escape")],
    "symlink-absolute": [_link("link", "/etc/passwd")],
    "symlink-absolute-into-dest": [_link("link", "/dest/file")],
    "symlink-then-write-through": [_link("out", ".."), _file("out/escape")],
    "symlink-through-earlier-symlink": [_link("s", "."), _link("t", "s/../escape"),
                                        _file("t/file")],
    "hardlink-escape": [_link("hard", "../escape", tarfile.LNKTYPE)],
    "hardlink-absolute": [_link("hard", "/etc/passwd", tarfile.LNKTYPE)],
    "hardlink-through-symlink": [_link("s", "."), _link("h", "s/../escape", tarfile.LNKTYPE)],
    "char-device": [_special("null", tarfile.CHRTYPE)],
    "block-device": [_special("disk", tarfile.BLKTYPE)],
    "fifo": [_special("pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_safe_extract_refuses(box: Path, case: str) -> None:
    # A harmless file first: a refusal must come before anything is written.
    archive = _tar(box / "a.tar", [_file("harmless.txt"), *HOSTILE[case]])
    before = _everything(box)
    with pytest.raises(UnsafeArchiveError) as info:
        safe_extract(archive, box / "dest")
    assert isinstance(info.value, ValidationError)
    assert not Path("/tmp/shipyard-escape-abs").exists()
    # Nothing appeared beside the destination (where every escape here aims).
    assert {p for p in _everything(box) - before if not p.startswith("dest")} == set()


@pytest.mark.parametrize(
    "case", ["absolute-path", "dot-dot", "inner-dot-dot", "symlink-relative-escape",
             "nested-symlink-escape", "symlink-absolute", "hardlink-escape", "char-device",
             "fifo"],
)
def test_refusal_comes_before_any_extraction(box: Path, case: str) -> None:
    # Each of these is visible from the member list alone, so nothing at all is extracted.
    archive = _tar(box / "a.tar", [_file("harmless.txt"), *HOSTILE[case]])
    with pytest.raises(UnsafeArchiveError, match="archive member"):
        check_archive(archive, box / "dest")
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, box / "dest")
    assert list((box / "dest").iterdir()) == []


def test_safe_extract_accepts_a_normal_tree_with_internal_links(box: Path) -> None:
    archive = _tar(box / "model.tar.gz", [
        _dir("model"),
        _file("model/weights.bin", b"\x00\x01"),
        _dir("model/sub"),
        _file("model/sub/config.json", b"{}"),
        _link("model/sub/weights", "../weights.bin"),
        _link("model/latest", "sub"),
        _link("model/copy.bin", "model/weights.bin", tarfile.LNKTYPE),
        _file("./top.txt", b"top"),
    ], mode="w:gz")
    dest = box / "dest" / "new" / "folder"
    safe_extract(archive, dest)
    assert (dest / "model" / "weights.bin").read_bytes() == b"\x00\x01"
    assert os.readlink(dest / "model" / "sub" / "weights") == "../weights.bin"
    assert (dest / "model" / "sub" / "weights").read_bytes() == b"\x00\x01"
    assert (dest / "model" / "latest" / "config.json").read_text() == "{}"
    assert (dest / "model" / "copy.bin").read_bytes() == b"\x00\x01"
    assert (dest / "top.txt").read_text() == "top"


def test_check_archive_lists_members_and_refuses_non_archives(box: Path) -> None:
    archive = _tar(box / "a.tar", [_dir("d"), _file("d/f")])
    assert [m.name for m in check_archive(archive, box / "dest")] == ["d", "d/f"]
    junk = box / "junk.tar.gz"
    junk.write_bytes(b"this is not a tarball")
    with pytest.raises(UnsafeArchiveError, match="not a readable tar archive"):
        safe_extract(junk, box / "dest")
    with pytest.raises(UnsafeArchiveError):
        check_archive(box / "missing.tar", box / "dest")


# -- make_tar_gz -------------------------------------------------------------------------------


def _tree(root: Path) -> None:
    # Created out of order, so sorting is the archive's doing, not the file system's.
    for rel, data in [("z.txt", "z"), ("m/b.txt", "b"), ("a.txt", "a"), ("m/a.txt", "ma"),
                      ("m/deep/x", "x")]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data)


def test_make_tar_gz_round_trips_sorted_contents(tmp_path: Path) -> None:
    source = tmp_path / "model"
    _tree(source)
    dest = tmp_path / "out" / "nested" / "model.tar.gz"
    assert make_tar_gz(source, dest) == dest
    with tarfile.open(dest, "r:gz") as tar:
        names = tar.getnames()
    # The folder's contents, not the folder itself, in sorted order at every level.
    assert names == ["a.txt", "m", "m/a.txt", "m/b.txt", "m/deep", "m/deep/x", "z.txt"]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.tar.gz"]
    out = tmp_path / "extracted"
    safe_extract(dest, out)
    assert (out / "m" / "deep" / "x").read_text() == "x"


def test_make_tar_gz_replaces_an_existing_archive(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _tree(source)
    dest = tmp_path / "model.tar.gz"
    dest.write_bytes(b"old")
    make_tar_gz(source, dest)
    with tarfile.open(dest, "r:gz") as tar:
        assert "a.txt" in tar.getnames()


def test_make_tar_gz_of_a_missing_folder_is_an_empty_archive(tmp_path: Path) -> None:
    dest = make_tar_gz(tmp_path / "nope", tmp_path / "output.tar.gz")
    with tarfile.open(dest, "r:gz") as tar:
        assert tar.getnames() == []


_PACK_UNREADABLE = """
import os, sys
from pathlib import Path
from shipyard.contract.archives import make_tar_gz
root = Path(sys.argv[1])
try:
    (root / "src" / "m" / "b.txt").read_bytes()
except PermissionError:
    pass
else:
    sys.exit("cannot make a file unreadable here")
try:
    make_tar_gz(root / "src", root / "out" / "model.tar.gz")
except OSError as exc:
    print("raised", type(exc).__name__)
else:
    print("no error")
print("left:", sorted(os.listdir(root / "out")))
print("old:", (root / "out" / "model.tar.gz").read_text())
"""


def _drop_file_capabilities() -> None:
    # root reads mode-000 files through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH; drop both
    # from the bounding set so the exec'd interpreter runs without them.
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_make_tar_gz_leaves_nothing_when_the_source_is_unreadable(tmp_path: Path) -> None:
    _tree(tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.tar.gz").write_text("previous archive")
    secret = tmp_path / "src" / "m" / "b.txt"
    secret.chmod(0)
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PACK_UNREADABLE, str(tmp_path)],
            capture_output=True, text=True, timeout=60, check=False,
            preexec_fn=_drop_file_capabilities if os.geteuid() == 0 else None,
        )
    finally:
        secret.chmod(0o644)
    if "cannot make a file unreadable" in result.stderr:
        pytest.skip("this process cannot make a file unreadable to itself")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "raised PermissionError",
        # No .partial beside the destination, and the previous archive untouched.
        "left: ['model.tar.gz']",
        "old: previous archive",
    ]
