"""Mounts a cluster node cannot share with the control plane, shipped through an object store.

On one engine a container's mounts are folders of the control plane's machine. A node of a
cluster sees those only where they are on storage every node shares (an NFS export). For the
others a cluster runtime gives the container one volume per mount on its node and runs the
stager (``runtimes.stager``) there before and after it:

- before: the stager unpacks what the control plane put in the mount's folder (config files,
  code, restored checkpoints: a tar in the depot) and downloads the mount's own objects
  (:attr:`Mount.fetch <shipyard.runtimes.base.Mount.fetch>`: input data a node stages for
  itself, straight from the store, never through the control plane);
- after: the stager returns each writable volume as a tar cut in parts and empties them all;
  :func:`retrieve` unpacks them into the mount's folder, so the control plane finds there what
  the container wrote, as it would after a bind mount.

The *depot* (:class:`Depot`) is a prefix of an S3 store the control plane and every node
reach; the stager holds no credentials: it gets pre-signed URLs, made when each step starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shipyard.contract.archives import safe_extract
from shipyard.errors import ShipyardError, StorageError
from shipyard.runtimes.base import ContainerState, Mount

__all__ = ["Collection", "Depot", "Shipped", "collect_manifest", "retrieve", "stage_manifest",
           "stager_command", "volume_path"]

log = logging.getLogger(__name__)

#: Parts a returned volume may be cut into (each ``stager.PART_BYTES``): 64 GiB at most.
MAX_PARTS = 1024
#: Where the stager sees the container's volumes.
STAGE_ROOT = "/stage"


class Depot(Protocol):
    """Objects under one prefix of a store the control plane and the nodes both reach."""

    def upload(self, source: Path, key: str) -> None: ...

    def download(self, key: str, dest: Path) -> None: ...

    def read(self, key: str) -> bytes: ...

    def url(self, key: str, method: str = "GET") -> str:
        """A pre-signed URL for the object ``key`` of the depot, as the nodes reach it."""

    def object_url(self, uri: str) -> str:
        """A pre-signed GET for the object at ``uri`` (``s3://``) of the same store."""

    def remove(self, prefix: str) -> None:
        """Every object under ``prefix``; idempotent."""


@dataclass(frozen=True)
class Shipped:
    """A mount given to the container as the volume ``volume`` of its node."""

    index: int
    volume: str
    mount: Mount

    @property
    def stage_path(self) -> str:
        return volume_path(self.index)

    def to_json(self) -> list[object]:
        return [self.index, self.volume, self.mount.source, self.mount.target,
                self.mount.read_only]

    @classmethod
    def from_json(cls, value: Sequence[object]) -> Shipped:
        index, volume, source, target, read_only = value
        return cls(int(str(index)), str(volume), Mount(str(source), str(target),
                                                       bool(read_only)))


class Collection:
    """A collector's run for one container, on a thread; ``error`` once it failed."""

    def __init__(self, run: Callable[[], None], thread_name: str) -> None:
        self.error = ""

        def target() -> None:
            try:
                run()
            except ShipyardError as exc:
                self.error = str(exc)
            except Exception as exc:  # a thread's error would otherwise be lost
                log.exception("collecting outputs failed")
                self.error = f"{type(exc).__name__}: {exc}"

        self.thread = threading.Thread(target=target, daemon=True, name=thread_name)
        self.thread.start()

    def state(self, ended: ContainerState) -> ContainerState:
        """The container's state to the platform, ``ended`` as its runtime saw it: running
        while its outputs come back, failed if they could not."""
        if self.thread.is_alive():
            return ContainerState(name=ended.name, running=True, node=ended.node)
        if self.error:
            return dataclasses.replace(
                ended, exit_code=None if ended.exit_code == 0 else ended.exit_code,
                error=f"what it wrote could not be returned from node {ended.node}: "
                      f"{self.error}")
        return ended


def volume_path(index: int) -> str:
    return f"{STAGE_ROOT}/{index}"


def stager_command(step: str) -> list[str]:
    """``python3 -c <the stager's source> step``: any image with Python runs it."""
    source = Path(__file__).with_name("stager.py").read_text(encoding="utf-8")
    return ["python3", "-c", source, step]


def stage_manifest(depot: Depot, prefix: str, shipped: Sequence[Shipped]) -> str:
    """Upload what the mounts' folders hold and the stage manifest; the manifest's URL."""
    volumes = []
    for item in shipped:
        source = Path(item.mount.source)
        tar_url = None
        if source.is_dir() and any(source.iterdir()):
            key = f"{prefix}/in/{item.index}.tar"
            with tempfile.TemporaryDirectory() as scratch:
                packed = Path(scratch) / "in.tar"
                with tarfile.open(packed, "w") as tar:
                    for entry in sorted(source.iterdir()):
                        tar.add(entry, arcname=entry.name)
                depot.upload(packed, key)
            tar_url = depot.url(key)
        mode = source.stat().st_mode & 0o777 if source.exists() else 0o755
        volumes.append({"path": item.stage_path, "tar": tar_url, "mode": mode,
                        "files": [[depot.object_url(uri), rel] for uri, rel in
                                  item.mount.fetch]})
    return _put_manifest(depot, f"{prefix}/stage.json", {"volumes": volumes})


def collect_manifest(depot: Depot, prefix: str, shipped: Sequence[Shipped], *,
                     empty: bool = True) -> str:
    """The collect manifest's URL: a part URL per :data:`MAX_PARTS` for each writable
    volume, the summary's, and (``empty``) every volume to empty."""
    volumes = [{"path": item.stage_path,
                "parts": [depot.url(f"{prefix}/out/{item.index}/{n:05d}", "PUT")
                          for n in range(MAX_PARTS)]}
               for item in shipped if not item.mount.read_only]
    return _put_manifest(depot, f"{prefix}/collect.json", {
        "volumes": volumes, "summary": depot.url(f"{prefix}/out/summary.json", "PUT"),
        "empty": [item.stage_path for item in shipped] if empty else []})


def clean_manifest(depot: Depot, prefix: str, shipped: Sequence[Shipped]) -> str:
    return _put_manifest(depot, f"{prefix}/clean.json",
                         {"empty": [item.stage_path for item in shipped]})


def retrieve(depot: Depot, prefix: str, shipped: Sequence[Shipped]) -> None:
    """Unpack each writable volume the stager returned into its mount's folder, which then
    holds what the container left there (what it had is replaced once all is unpacked).
    Raises ``StorageError`` or ``UnsafeArchiveError`` (a link out of the folder)."""
    try:
        summary = json.loads(depot.read(f"{prefix}/out/summary.json"))
    except ValueError as exc:
        raise StorageError(f"the stager's summary is not JSON: {exc}") from exc
    for item in shipped:
        if item.mount.read_only:
            continue
        parts = summary.get(item.stage_path)
        if not isinstance(parts, int) or not 0 < parts <= MAX_PARTS:
            raise StorageError(f"the stager did not return {item.mount.target}")
        folder = Path(item.mount.source)
        returned = folder.with_name(f".{folder.name}.returned")
        shutil.rmtree(returned, ignore_errors=True)
        try:
            with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
                packed = Path(scratch) / "out.tar"
                with open(packed, "wb") as out:
                    for n in range(parts):
                        piece = Path(scratch) / "part"
                        depot.download(f"{prefix}/out/{item.index}/{n:05d}", piece)
                        with open(piece, "rb") as part:
                            shutil.copyfileobj(part, out, 1024 * 1024)
                        piece.unlink()
                safe_extract(packed, returned)
            _replace_contents(folder, returned)
        except OSError as exc:
            raise StorageError(f"could not unpack what the container wrote to "
                               f"{item.mount.target} into {folder}: {exc}") from exc
        finally:
            shutil.rmtree(returned, ignore_errors=True)


def _replace_contents(folder: Path, returned: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for entry in returned.iterdir():
        os.replace(entry, folder / entry.name)


def _put_manifest(depot: Depot, key: str, document: dict[str, object]) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "manifest.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        depot.upload(path, key)
    return depot.url(key)
