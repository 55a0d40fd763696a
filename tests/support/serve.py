"""The toolkit's ``serve`` as a real process on 127.0.0.1:0, driven over real HTTP.

Give it a root laid out as ``/opt/ml`` (``model/code/inference.py``); it reads the bound port
from the process's log and polls ``/ping``.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.support.processes import terminate


class Server:
    """A ``serve`` process; ``url`` parts known once its log says where it listens."""

    def __init__(self, root: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.log_path = root / "serve.log"
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root), "SAGEMAKER_BIND_TO_PORT": "0",
                    "SHIPYARD_SERVE_HOST": "127.0.0.1", "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
                    **env}
        self.proc = subprocess.Popen([sys.executable, "-m", "shipyard.toolkit.serve", *args],
                                     env=full_env, stdout=self._log, stderr=subprocess.STDOUT)
        self.port = 0

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log())
            if found:
                self.port = int(found.group(1))
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"serve did not start:\n{self.log()}")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def invoke(self, payload: Any, **headers: str) -> tuple[int, dict[str, str], bytes]:
        hdrs = {"Content-Type": "application/json", **headers}
        return self.request("POST", "/invocations", json.dumps(payload).encode(), hdrs)

    def wait_ping(self, status: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request("GET", "/ping")[0] == status:
                return
            time.sleep(0.02)
        raise AssertionError(f"/ping never answered {status}:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    pids.append(int(entry.name))
        return pids

    def stop(self) -> int:
        terminate(self.proc, 30)
        self._log.close()
        return self.proc.returncode
