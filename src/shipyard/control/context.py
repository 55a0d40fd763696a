"""What every part of the control plane shares: settings, state, logs, runtime, storage."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from shipyard.control.confinement import FileRoots
from shipyard.control.s3 import S3Client
from shipyard.control.state.locks import JobLock
from shipyard.control.state.logs import LogStore
from shipyard.control.state.store import Store
from shipyard.runtimes.base import Runtime
from shipyard.settings import Settings


@dataclass
class Context:
    settings: Settings
    store: Store
    logs: LogStore
    runtime: Runtime
    _s3: S3Client | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(cls, settings: Settings, runtime: Runtime) -> Context:
        data = settings.data_dir
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        # It holds the key pair, environment values and logs: the owner's alone, even when
        # an older version made it with the umask's mode.
        with contextlib.suppress(OSError):
            data.chmod(0o700)
        return cls(settings=settings, store=Store(data / "state.db"),
                   logs=LogStore(data / "logs"), runtime=runtime)

    @property
    def s3(self) -> S3Client:
        with self._lock:
            if self._s3 is None:
                settings = self.settings
                self._s3 = S3Client(settings.s3_endpoint_url, settings.region,
                                    settings.transfer_workers,
                                    access_key_id=settings.s3_access_key_id,
                                    secret_access_key=settings.s3_secret_access_key)
            return self._s3

    @property
    def file_roots(self) -> FileRoots:
        """Where local locations may point; built per use, so a folder that became a
        symbolic link since the last job is seen."""
        return FileRoots.of(self.settings)

    def job_dir(self, kind: str, name: str, uid: str) -> Path:
        return self.settings.data_dir / "jobs" / kind / f"{name}-{uid}"

    def job_lock(self, kind: str, name: str) -> JobLock:
        return JobLock(self.settings.data_dir / "locks" / f"{kind}-{name}.lock")


def runtime_for(settings: Settings) -> Runtime:
    """The runtime the settings ask for; ``auto`` = Docker if an engine answers, else process."""
    from shipyard.runtimes import (
        SCOPE_LABEL,
        Confinement,
        DockerRuntime,
        ProcessRuntime,
        default_runtime,
    )

    labels = {SCOPE_LABEL: settings.scope} if settings.scope else None
    confinement = Confinement(pids_limit=settings.container_pids_limit,
                              extra_capabilities=frozenset(settings.container_extra_capabilities))
    if settings.runtime == "docker":
        return DockerRuntime(labels=labels, confinement=confinement)
    if settings.runtime == "process":
        return ProcessRuntime(settings.data_dir / "processes")
    return default_runtime(settings.data_dir, labels, confinement)
