"""The wheelhouse: every dependency as a wheel, resolved on the host, installed offline.

Containers here (and in air-gapped clusters) cannot reach a package index, and a build that
resolves at build time is not reproducible. So the host runs ``pip download --only-binary
:all:`` for the base image's interpreter (its Python version, ``cp`` ABI, CPU architecture and
every ``manylinux`` tag its glibc accepts), and the image installs with ``pip install
--no-index --require-hashes`` from a lock listing each wheel's sha256. Resolved wheelhouses are
cached by their inputs (requirements text, target, sources), so a rebuild resolves nothing.

Shipyard's own toolkit goes in as a wheel made from the running installation (see
:func:`toolkit_wheel`): the toolkit of the Shipyard that builds the image is what runs in it.
What goes into that wheel is the toolkit's to say (:mod:`shipyard.toolkit.image`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import shipyard
from shipyard.build.errors import BuildError
from shipyard.toolkit.image import TOOLKIT_FILES, TOOLKIT_REQUIRES_PYTHON, TOOLKIT_SCRIPTS

__all__ = [
    "LOCK_FILE",
    "Target",
    "download_command",
    "lock_text",
    "resolve_wheelhouse",
    "toolkit_wheel",
]

LOCK_FILE = "requirements.lock"
#: The oldest glibc manylinux wheels name (manylinux1 = glibc 2.5).
_OLDEST_GLIBC_MINOR = 5
_LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_COMPLETE = ".complete"


@dataclass(frozen=True)
class Target:
    """The interpreter wheels are resolved for."""

    python: str  # "3.11"
    machine: str  # "x86_64"
    glibc: tuple[int, int]  # (2, 36)

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def platforms(self) -> list[str]:
        """Every manylinux tag this glibc accepts, newest first, legacy aliases included."""
        major, newest = self.glibc
        if major != 2:
            raise BuildError(f"glibc {major}.{newest} is not a glibc 2 the manylinux tags know")
        # manylinux1/2010 exist for Intel only; other architectures start at manylinux2014.
        oldest = _OLDEST_GLIBC_MINOR if self.machine in {"x86_64", "i686"} else 17
        tags = []
        for minor in range(newest, oldest - 1, -1):
            tags.append(f"manylinux_2_{minor}_{self.machine}")
            legacy = _LEGACY_MANYLINUX.get(minor)
            if legacy:
                tags.append(f"{legacy}_{self.machine}")
        return tags

    def key(self) -> str:
        return f"{self.abi}-{self.machine}-glibc{self.glibc[0]}.{self.glibc[1]}"


def download_command(target: Target, dest: Path, *, requirements_file: Path | None,
                     packages: Sequence[str] = (), find_links: Sequence[str] = (),
                     no_index: bool = False, python: str = sys.executable) -> list[str]:
    """The ``pip download`` that fills ``dest`` with binary wheels for ``target``."""
    cmd = [python, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
           "--only-binary", ":all:", "--dest", str(dest),
           "--python-version", target.python, "--implementation", "cp", "--abi", target.abi]
    for platform in target.platforms():
        cmd += ["--platform", platform]
    for link in find_links:
        cmd += ["--find-links", link]
    if no_index:
        cmd.append("--no-index")
    if requirements_file is not None:
        cmd += ["-r", str(requirements_file)]
    cmd += list(packages)
    return cmd


def _cache_key(requirements: str, target: Target, packages: Sequence[str],
               find_links: Sequence[str], no_index: bool) -> str:
    payload = json.dumps({"requirements": requirements, "target": target.key(),
                          "packages": sorted(packages), "find_links": list(find_links),
                          "no_index": no_index}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def resolve_wheelhouse(cache_dir: Path, target: Target, *, requirements: str = "",
                       requirements_file: Path | None = None, packages: Sequence[str] = (),
                       find_links: Sequence[str] = (), no_index: bool = False,
                       refresh: bool = False) -> list[Path]:
    """The wheels for ``requirements`` (+ ``packages``), downloaded once per set of inputs.

    ``find_links`` adds local wheel folders; with ``no_index`` they are the only source, which
    is how an air-gapped site builds (the same wheels, brought in on a disk). Raises
    ``BuildError`` with pip's own explanation when something has no wheel for the target.
    """
    if not requirements.strip() and not packages:
        return []
    house = cache_dir / "wheelhouse" / _cache_key(requirements, target, packages, find_links,
                                                  no_index)
    if (house / _COMPLETE).is_file() and not refresh:
        return sorted(house.glob("*.whl"))
    house.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=house.parent))
    try:
        cmd = download_command(target, staging, requirements_file=requirements_file,
                               packages=packages, find_links=find_links, no_index=no_index)
        cwd = requirements_file.parent if requirements_file is not None else None
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            raise BuildError(
                f"resolving the requirements for Python {target.python} on "
                f"{target.machine} (glibc {target.glibc[0]}.{target.glibc[1]}) failed; every "
                "dependency needs a binary wheel for the image's interpreter (build missing "
                f"ones with `pip wheel` into a folder and pass it with --find-links):\n{tail}")
        (staging / _COMPLETE).write_text(" ".join(cmd) + "\n", encoding="utf-8")
        if house.exists():
            shutil.rmtree(house)
        os.replace(staging, house)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return sorted(house.glob("*.whl"))


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _in_toolkit(rel: str) -> bool:
    return any(rel == part or (part.endswith("/") and rel.startswith(part))
               for part in TOOLKIT_FILES)


def _package_files(package_dir: Path) -> Iterable[tuple[str, bytes]]:
    for path in sorted(package_dir.rglob("*")):
        rel = path.relative_to(package_dir.parent)
        if (path.is_dir() or "__pycache__" in rel.parts or path.suffix in {".pyc", ".pyo"}
                or not _in_toolkit(rel.as_posix())):
            continue
        yield rel.as_posix(), path.read_bytes()


def toolkit_wheel(dest: Path) -> Path:
    """A wheel of the running Shipyard's toolkit: what :mod:`shipyard.toolkit.image` lists.

    Built directly (no pip, no build backend) and byte-for-byte deterministic: fixed
    timestamps and order, so an unchanged checkout gives the same wheel and the image's
    content hash does not change.
    """
    version = shipyard.__version__
    dist_info = f"shipyard-{version}.dist-info"
    files = dict(_package_files(Path(shipyard.__file__).resolve().parent))
    files[f"{dist_info}/METADATA"] = (
        "Metadata-Version: 2.1\nName: shipyard\n"
        f"Version: {version}\n"
        "Summary: Shipyard's in-container toolkit (train, serve), packed by shipyard build\n"
        f"Requires-Python: {TOOLKIT_REQUIRES_PYTHON}\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: shipyard-build\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n"
    )
    files[f"{dist_info}/entry_points.txt"] = (
        "[console_scripts]\n"
        + "".join(f"{name} = {target}\n" for name, target in sorted(TOOLKIT_SCRIPTS.items()))
    ).encode()
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / f"shipyard-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return wheel


def _requirement_of(wheel_name: str) -> str:
    """``numpy-2.1.0-cp311-...whl`` -> ``numpy==2.1.0`` (wheel names are already escaped)."""
    parts = wheel_name[: -len(".whl")].split("-")
    if len(parts) < 5:
        raise BuildError(f"{wheel_name} is not a wheel file name")
    return f"{parts[0]}=={parts[1]}"


def lock_text(wheels: Iterable[tuple[str, str]]) -> str:
    """A pip requirements file pinning every wheel by version and sha256 (``--require-hashes``);
    ``wheels`` are (file name, sha256 hex digest) pairs."""
    lines = []
    for name, digest in sorted(wheels):
        lines.append(f"{_requirement_of(name)} --hash=sha256:{digest}")
    return "\n".join(lines) + "\n"
