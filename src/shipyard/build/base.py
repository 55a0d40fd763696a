"""The base image: the default one Shipyard makes itself, and what a base image offers.

The default, ``shipyard/base:bookworm-py311``, is Debian bookworm (``minbase``) with its
Python 3.11 and pip, made from Debian's archive with ``debootstrap`` and imported into the
engine: no container registry is needed (air-gapped sites and this project's CI have none).
``scripts/base-image.sh`` makes the same image for the test suite.

Any other base works if it has ``python3`` (3.8+) with pip and glibc: :func:`probe_base` runs it
once to learn its Python version, CPU architecture and glibc version, from which the wheelhouse
is resolved, and whether it already ships the CUDA runtime (``libcudart``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.build.errors import BuildError
from shipyard.build.reference import parse_ref
from shipyard.contract.labels import MANAGED_LABEL
from shipyard.errors import RuntimeUnavailable, ShipyardError

if TYPE_CHECKING:
    import docker

__all__ = [
    "DEFAULT_BASE",
    "BaseInfo",
    "base_image_changes",
    "debootstrap_command",
    "engine_errors",
    "ensure_base",
    "image_exists",
    "make_base_image",
    "probe_base",
]

DEFAULT_BASE = "shipyard/base:bookworm-py311"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
#: The packages on top of ``minbase``: Python, venv and pip, and CA certificates.
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")

_PROBE = r"""
import ctypes.util, importlib.util, json, platform, sys
print(json.dumps({
    "python": "%d.%d" % sys.version_info[:2],
    "executable": sys.executable,
    "machine": platform.machine(),
    "libc": list(platform.libc_ver()),
    "pip": importlib.util.find_spec("pip") is not None,
    "cudart": ctypes.util.find_library("cudart") or "",
}))
"""


@contextlib.contextmanager
def engine_errors(what: str) -> Iterator[None]:
    """Docker SDK and transport errors become Shipyard errors (this package's one boundary)."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except ShipyardError:
        raise
    except docker.errors.ImageNotFound as exc:
        raise BuildError(f"{what}: image not found ({exc.explanation or exc})") from exc
    except docker.errors.APIError as exc:
        raise BuildError(f"{what}: the Docker engine refused: {exc.explanation or exc}") from exc
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise RuntimeUnavailable(
            f"{what}: cannot reach the Docker engine ({exc}); is dockerd running?"
        ) from exc


@dataclass(frozen=True)
class BaseInfo:
    """What :func:`probe_base` learnt about a base image."""

    image_id: str
    python: str
    executable: str
    machine: str
    libc: str
    libc_version: str
    pip: bool
    cudart: str = ""

    @property
    def glibc(self) -> tuple[int, int]:
        major, _, minor = self.libc_version.partition(".")
        return int(major), int(minor or 0)


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    import docker.errors

    with engine_errors(f"inspecting {ref}"):
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
    return True


def _cache_path(cache_dir: Path | None) -> Path | None:
    return cache_dir / "base-probes.json" if cache_dir is not None else None


def _load_cache(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def probe_base(client: docker.DockerClient, ref: str, *, labels: Mapping[str, str],
               cache_dir: Path | None = None) -> BaseInfo:
    """Run ``python3`` in ``ref`` once (no network) and describe it; cached by image id."""
    import docker.errors

    with engine_errors(f"inspecting base image {ref}"):
        image_id = str(client.images.get(ref).id)
    path = _cache_path(cache_dir)
    cache = _load_cache(path)
    if image_id in cache:
        return BaseInfo(**cache[image_id])
    with engine_errors(f"probing base image {ref}"):
        try:
            out = client.containers.run(
                ref, entrypoint=["python3", "-c", _PROBE], command=[], user="0",
                network_disabled=True, remove=True, labels=dict(labels),
                stdout=True, stderr=False,
            )
        except docker.errors.ContainerError as exc:
            raise BuildError(
                f"base image {ref} has no working python3 (exit {exc.exit_status}): the recipe "
                "needs Python 3 with pip in the base; choose another --base or make the "
                "default one with --make-base"
            ) from exc
    raw = json.loads(out.decode() if isinstance(out, bytes) else str(out))
    libc, libc_version = (raw["libc"] + ["", ""])[:2]
    info = BaseInfo(image_id=image_id, python=raw["python"], executable=raw["executable"],
                    machine=raw["machine"], libc=libc, libc_version=libc_version,
                    pip=bool(raw["pip"]), cudart=raw.get("cudart") or "")
    if not info.pip:
        raise BuildError(f"base image {ref} has Python {info.python} but no pip: install "
                         "python3-pip in the base image")
    if info.libc != "glibc":
        raise BuildError(f"base image {ref} does not use glibc ({info.libc or 'unknown libc'}): "
                         "the wheelhouse is resolved for manylinux; use a glibc-based image")
    if path is not None:
        cache[image_id] = asdict(info)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    return info


def debootstrap_command(rootfs: Path, *, suite: str = DEBIAN_SUITE,
                        mirror: str = DEBIAN_MIRROR) -> list[str]:
    """The debootstrap call that makes the base image's root file system."""
    return ["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
            suite, str(rootfs), mirror]


def base_image_changes() -> list[str]:
    """Dockerfile instructions applied on import (as ``scripts/base-image.sh``)."""
    return [
        f"LABEL {MANAGED_LABEL}=true",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1",
    ]


def make_base_image(client: docker.DockerClient, tag: str = DEFAULT_BASE, *,
                    mirror: str = DEBIAN_MIRROR) -> str:
    """Build the Debian + Python base image with debootstrap and import it as ``tag``.

    Needs root and ``debootstrap`` (``apt-get install debootstrap``) and about 50 s; reaches
    only the Debian mirror. Returns the tag; an image already tagged so is kept as it is.
    """
    if image_exists(client, tag):
        return tag
    if shutil.which("debootstrap") is None:
        raise BuildError("making the base image needs debootstrap: apt-get install debootstrap "
                         "(or build and load a Python base image yourself and pass --base)")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise BuildError("making the base image needs root (debootstrap creates device files "
                         "and sets owners): run `sudo shipyard build --make-base`")
    with tempfile.TemporaryDirectory(prefix="shipyard-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        result = subprocess.run(debootstrap_command(rootfs, mirror=mirror),
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise BuildError(f"debootstrap failed (exit {result.returncode}):\n{tail}")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / cache).glob("*"):
                if entry.is_file():
                    entry.unlink()
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
        ref = parse_ref(tag)
        with engine_errors(f"importing base image {tag}"):
            client.api.import_image_from_file(str(archive), repository=ref.name,
                                              tag=ref.tag, changes=base_image_changes())
    return tag


def ensure_base(client: docker.DockerClient, ref: str, *, make: bool = False) -> None:
    """Make sure ``ref`` is in the engine: make the default one if asked, else pull it."""
    import docker.errors

    if image_exists(client, ref):
        return
    if ref == DEFAULT_BASE:
        if make:
            make_base_image(client, ref)
            return
        raise BuildError(f"the default base image {ref} is not in the engine: make it with "
                         "`shipyard build --make-base` (Debian's archive only, about a minute)")
    with engine_errors(f"pulling base image {ref}"):
        try:
            if "@" in ref:  # pinned by digest
                client.images.pull(ref)
            else:
                parsed = parse_ref(ref)
                client.images.pull(parsed.name, tag=parsed.tag)
        except docker.errors.APIError as exc:
            raise BuildError(
                f"base image {ref} is not in the engine and cannot be pulled "
                f"({exc.explanation or exc}); `docker load` it, or use the default base "
                "(`--make-base` makes it without a registry)"
            ) from exc
