"""Build small test images FROM the locally made base image, with Shipyard's toolkit inside.

Images are tagged by a hash of their build context, so an unchanged image is built once per
engine and reused. Every image carries the managed label and the test scope label.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import docker

BASE_IMAGE = os.environ.get("SHIPYARD_BASE_IMAGE", "shipyard/base:bookworm-py311")
TEST_SCOPE = "shipyard-tests"
#: Images are shared by every test session (they are tagged by content).
LABELS = {"org.shipyard.managed": "true", "org.shipyard.scope": TEST_SCOPE}
#: Containers and networks belong to one test session: its cleanup removes only its own, so
#: two sessions on one engine never kill each other's containers.
SESSION_SCOPE = f"{TEST_SCOPE}-{uuid.uuid4().hex[:10]}"
SESSION_LABELS = {"org.shipyard.managed": "true", "org.shipyard.scope": SESSION_SCOPE}
ROOT = Path(__file__).resolve().parents[2]
WHEEL_CACHE = ROOT / ".cache" / "wheels"


def toolkit_wheel() -> Path:
    """A wheel of this checkout (the toolkit is stdlib-only, so it installs with --no-deps)."""
    src_hash = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        src_hash.update(path.read_bytes())
    src_hash.update((ROOT / "pyproject.toml").read_bytes())
    out = WHEEL_CACHE / f"shipyard-{src_hash.hexdigest()[:12]}"
    wheels = list(out.glob("shipyard-*.whl")) if out.exists() else []
    if wheels:
        return wheels[0]
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(ROOT)],
        check=True,
    )
    return next(out.glob("shipyard-*.whl"))


def wheelhouse(*requirements: str) -> Path:
    """Download binary wheels for cp311 on the host, for offline installs inside images."""
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:12]
    out = WHEEL_CACHE / f"house-{key}"
    if out.exists() and any(out.iterdir()):
        return out
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:",
         "--python-version", "3.11", "--platform", "manylinux2014_x86_64",
         "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64",
         "-d", str(out), *requirements],
        check=True,
    )
    return out


def build_image(
    client: docker.DockerClient,
    name: str,
    files: dict[str, str | bytes],
    dockerfile_body: str,
    *,
    with_toolkit: bool = True,
    wheels: tuple[str, ...] = (),
) -> str:
    """Build ``shipyard-test/<name>:<hash>`` from ``files`` and a Dockerfile body.

    The Dockerfile starts ``FROM`` the base image; when ``with_toolkit`` the toolkit wheel is
    installed first; ``wheels`` are pip requirements installed offline from a host wheelhouse.
    """
    context: dict[str, bytes] = {
        k: (v.encode() if isinstance(v, str) else v) for k, v in files.items()
    }
    header = [f"FROM {BASE_IMAGE}"]
    if with_toolkit:
        wheel = toolkit_wheel()
        context[f"wheels/{wheel.name}"] = wheel.read_bytes()
    if wheels:
        for path in sorted(wheelhouse(*wheels).iterdir()):
            context[f"wheels/{path.name}"] = path.read_bytes()
    if with_toolkit or wheels:
        header.append("COPY wheels /tmp/wheels")
        reqs = " ".join(["shipyard"] if with_toolkit else []) + " " + " ".join(wheels)
        header.append(
            "RUN python3 -m pip install -q --no-index --find-links /tmp/wheels "
            f"--break-system-packages {reqs.strip()} && rm -rf /tmp/wheels"
        )
    dockerfile = "\n".join(header) + "\n" + dockerfile_body + "\n"
    context["Dockerfile"] = dockerfile.encode()
    return build_context(client, f"shipyard-test/{name}", context)


def build_context(client: docker.DockerClient, repository: str, context: dict[str, bytes],
                  *, mode: int = 0o755) -> str:
    """Build ``context`` (its ``Dockerfile`` included) as ``<repository>:<content hash>``,
    labelled; an image already tagged with that hash is reused."""
    digest = hashlib.sha256()
    for key in sorted(context):
        digest.update(key.encode() + b"\0" + context[key])
    tag = f"{repository}:{digest.hexdigest()[:12]}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key, data in sorted(context.items()):
            info = tarfile.TarInfo(key)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    client.images.build(
        fileobj=buf, custom_context=True, tag=tag, labels=LABELS, rm=True, forcerm=True
    )
    return tag
