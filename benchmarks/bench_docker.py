"""What the Docker-based benchmarks share: the engine, labelled images tagged by content, and
cleanup of exactly what a benchmark made (its ``org.shipyard.scope``)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = os.environ.get("SHIPYARD_BASE_IMAGE", "shipyard/base:bookworm-py311")
SCOPE = "shipyard-bench"
LABELS = {"org.shipyard.managed": "true", "org.shipyard.scope": SCOPE}


def ensure_engine() -> Any:
    """A Docker client whose engine answers, with the base image present (built if missing)."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        sys.exit(f"the Docker engine does not answer: {exc}")
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        print(f"base image {BASE_IMAGE} missing: running scripts/base-image.sh", flush=True)
        subprocess.run(["bash", str(ROOT / "scripts" / "base-image.sh")], check=True)
    return client


def build_context(client: Any, repository: str, context: dict[str, bytes]) -> str:
    """Build ``context`` (its ``Dockerfile`` included) as ``<repository>:<content hash>``,
    labelled; an unchanged context reuses the image built last time."""
    import docker

    digest = hashlib.sha256()
    for key in sorted(context):
        digest.update(key.encode() + b"\0" + context[key])
    tag = f"{repository}:{digest.hexdigest()[:12]}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    print(f"building {tag}", flush=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key, data in sorted(context.items()):
            info = tarfile.TarInfo(key)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=tag, labels=LABELS, rm=True,
                        forcerm=True)
    return tag


def remove_scoped_containers(client: Any) -> int:
    """Remove the containers benchmarks made (and only those); returns how many."""
    import docker

    filters = {"label": [f"{k}={v}" for k, v in LABELS.items()]}
    removed = 0
    for container in client.containers.list(all=True, filters=filters):
        try:
            container.remove(force=True, v=True)
            removed += 1
        except docker.errors.NotFound:
            pass
    return removed
