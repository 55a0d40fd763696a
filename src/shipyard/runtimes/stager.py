"""The program a cluster node runs before and after a container whose mounts the node cannot
share with the control plane (``runtimes.shipping``): it fills the container's volumes, then
empties them and sends back what the container wrote.

It runs in any image with ``python3`` (3.8+): the runtime passes this file's text to
``python3 -c``, so it imports nothing but the standard library and nothing of Shipyard. It
holds no credentials: every object it reads or writes is named by a pre-signed URL in the
manifest it is given (``SHIPYARD_STAGER_MANIFEST``, itself a pre-signed URL).

- ``stage``: for each volume, unpack the control plane's tar of the mount's local content, and
  download the mount's objects (a node staging its own inputs) to their paths in it.
- ``collect``: for each volume to return, a tar of it cut into parts, each PUT to the next
  URL; a summary (how many parts each) PUT last; then every volume emptied.
- ``clean``: every volume emptied (a container removed before its outputs were wanted).
- ``await-collect``: beside the container in its pod (a runtime whose volumes live only as
  long as the pod): wait until the manifest exists, which the control plane writes once the
  container has ended, then ``collect``. SIGTERM is ignored, so that what a container
  stopped with a grace period wrote still comes back within it.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import sys
import tarfile
import time
import urllib.error
import urllib.request
from typing import Any

MANIFEST_ENV = "SHIPYARD_STAGER_MANIFEST"
#: Bytes of one returned part: held in memory while it is sent.
PART_BYTES = 64 * 1024 * 1024
DOWNLOAD_THREADS = 8
ATTEMPTS = 5
#: How often ``await-collect`` asks for its manifest.
AWAIT_SECONDS = 0.5


def _request(url: str, data: bytes | None = None, method: str = "GET") -> Any:
    last: BaseException | None = None
    for attempt in range(ATTEMPTS):
        try:
            request = urllib.request.Request(url, data=data, method=method)
            if data is not None:
                request.add_header("Content-Length", str(len(data)))
            return urllib.request.urlopen(request, timeout=300)
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise RuntimeError(f"{method} {url.split('?', maxsplit=1)[0]}: HTTP {exc.code} "
                                   f"{exc.read()[:300].decode(errors='replace')}") from None
            last = exc
        except OSError as exc:
            last = exc
        time.sleep(min(8.0, 0.5 * 2 ** attempt))
    raise RuntimeError(f"{method} {url.split('?', maxsplit=1)[0]}: {last}")


def _inside(root: str, path: str) -> bool:
    return (os.path.normpath(path) + "/").startswith(root.rstrip("/") + "/")


def _safe_join(root: str, rel: str) -> str:
    path = os.path.normpath(os.path.join(root, rel))
    if path == os.path.normpath(root) or not _inside(root, path):
        raise RuntimeError(f"{rel!r} would land outside {root}")
    return path


#: The data filter where this Python has it (3.12, and patch releases before): a second check.
_FILTER: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _check_member(member: tarfile.TarInfo, root: str) -> None:
    """The control plane's tar holds files, folders and links that stay inside."""
    path = _safe_join(root, member.name)
    if member.issym() and not _inside(root, os.path.join(os.path.dirname(path),
                                                           member.linkname)):
        raise RuntimeError(f"link {member.name} points outside")
    if member.islnk():
        _safe_join(root, member.linkname)
    elif not (member.isfile() or member.isdir() or member.issym()):
        raise RuntimeError(f"unexpected member {member.name} (not a file, folder or link)")


def _download(url: str, dest: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    partial = dest + ".shipyard-partial"
    with _request(url) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out, 1024 * 1024)
    os.replace(partial, dest)


def stage(manifest: dict[str, Any]) -> None:
    for volume in manifest["volumes"]:
        root = volume["path"]
        if volume.get("tar"):
            with _request(volume["tar"]) as response, \
                    tarfile.open(fileobj=response, mode="r|") as tar:
                for member in tar:
                    _check_member(member, root)
                    tar.extract(member, root, **_FILTER)
        files = volume.get("files") or []
        with concurrent.futures.ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
            for done in [pool.submit(_download, url, _safe_join(root, rel))
                         for url, rel in files]:
                done.result()
        os.chmod(root, int(volume.get("mode", 0o755)))
        print(f"staged {root}: {len(files)} objects", flush=True)


class _Parts:
    """A file-like sink that PUTs each :data:`PART_BYTES` written to the next URL."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.sent = 0
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        while len(self.buffer) >= PART_BYTES:
            self._send(bytes(self.buffer[:PART_BYTES]))
            del self.buffer[:PART_BYTES]
        return len(data)

    def _send(self, data: bytes) -> None:
        if self.sent >= len(self.urls):
            raise RuntimeError(f"more than {len(self.urls) * PART_BYTES} bytes to return")
        _request(self.urls[self.sent], data, "PUT").close()
        self.sent += 1

    def close(self) -> None:
        self._send(bytes(self.buffer))
        self.buffer = bytearray()


def _empty(root: str) -> None:
    for entry in os.listdir(root):
        path = os.path.join(root, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def collect(manifest: dict[str, Any]) -> None:
    summary: dict[str, int] = {}
    for volume in manifest.get("volumes") or []:
        parts = _Parts(volume["parts"])
        with tarfile.open(fileobj=parts, mode="w|") as tar:  # type: ignore[call-overload]
            for entry in sorted(os.listdir(volume["path"])):
                tar.add(os.path.join(volume["path"], entry), arcname=entry)
        parts.close()
        summary[volume["path"]] = parts.sent
        print(f"returned {volume['path']} in {parts.sent} parts", flush=True)
    if manifest.get("summary"):
        _request(manifest["summary"], json.dumps(summary).encode(), "PUT").close()
    for root in manifest.get("empty") or []:
        _empty(root)


def _await(url: str) -> Any:
    """The object at ``url`` once it exists (asked every :data:`AWAIT_SECONDS`)."""
    while True:
        try:
            return urllib.request.urlopen(url, timeout=60)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise RuntimeError(f"GET {url.split('?', maxsplit=1)[0]}: HTTP {exc.code}"
                                   ) from None
        except OSError:
            pass  # the store restarting: ask again
        time.sleep(AWAIT_SECONDS)


def main(argv: list[str]) -> int:
    steps = ("stage", "collect", "clean", "await-collect")
    if len(argv) != 1 or argv[0] not in steps:
        print(f"usage: stager {'|'.join(steps)}", file=sys.stderr)
        return 2
    try:
        if argv[0] == "await-collect":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            opened = _await(os.environ[MANIFEST_ENV])
        else:
            opened = _request(os.environ[MANIFEST_ENV])
        with opened as response:
            manifest = json.load(response)
        if argv[0] == "stage":
            stage(manifest)
        else:
            collect(manifest if argv[0] != "clean" else {"empty": manifest.get("empty")})
    except (RuntimeError, OSError, KeyError, ValueError, tarfile.TarError) as exc:
        print(f"stager {argv[0]} failed: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
