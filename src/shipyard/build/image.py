"""Building the image: the context (code, wheels, Dockerfile), its content hash, the engine build.

The build context is assembled in memory as a deterministic tar (sorted names, owner root,
mtime 0), and its sha256 is the image's identity: an image labelled with the same hash is
reused (re-tagged) instead of rebuilt, so an unchanged project builds in well under a second.
The engine builds with ``--network none`` unless asked otherwise: the wheelhouse must hold
everything, which is what makes the build reproducible and air-gap safe.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from shipyard.build import gpu as gpu_recipe
from shipyard.build.base import DEFAULT_BASE, engine_errors, ensure_base, probe_base
from shipyard.build.errors import BuildError
from shipyard.build.project import Project
from shipyard.build.recipe import CONTEXT_CODE, CONTEXT_WHEELS, Recipe, render
from shipyard.build.reference import parse_ref
from shipyard.build.wheelhouse import (
    LOCK_FILE,
    Target,
    lock_text,
    resolve_wheelhouse,
    toolkit_wheel,
)
from shipyard.contract.labels import BUILD_CONTEXT_LABEL, MANAGED_LABEL

if TYPE_CHECKING:
    import docker

__all__ = [
    "CONTEXT_LABEL",
    "BuildOptions",
    "BuildPlan",
    "BuildResult",
    "ContextFile",
    "build_image",
    "plan_build",
    "write_context",
]

CONTEXT_LABEL = BUILD_CONTEXT_LABEL
_LOG_TAIL = 25
_CHUNK = 1 << 20


@dataclass(frozen=True)
class BuildOptions:
    """How to build; ``None`` means "as the project's shipyard.toml says, else the default"."""

    tag: str | None = None
    base: str | None = None
    gpu: bool | None = None
    make_base: bool = False
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    no_cache: bool = False
    allow_network: bool = False
    cuda_packages: tuple[str, ...] = gpu_recipe.CUDA_PACKAGES
    #: extra labels on the image (e.g. ``org.shipyard.scope``)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildPlan:
    """What will be built: the Dockerfile and the context, and their hash."""

    recipe: Recipe
    dockerfile: str
    context: Mapping[str, ContextFile]
    context_hash: str
    tag: str


@dataclass(frozen=True)
class BuildResult:
    tag: str
    image_id: str
    context_hash: str
    reused: bool
    base: str
    recipe: str
    dockerfile: str

    def as_record(self) -> dict[str, object]:
        return {"tag": self.tag, "image_id": self.image_id, "context_hash": self.context_hash,
                "reused": self.reused, "base": self.base, "recipe": self.recipe}


@dataclass(frozen=True)
class ContextFile:
    """One file of the build context: small ones in memory, wheels streamed from disk (a CUDA
    or framework wheelhouse is gigabytes, and is read twice at most: to hash, to send)."""

    source: bytes | Path
    mode: int
    size: int
    sha256: str

    @classmethod
    def of_bytes(cls, data: bytes, mode: int = 0o644) -> ContextFile:
        return cls(data, mode, len(data), hashlib.sha256(data).hexdigest())

    @classmethod
    def of_path(cls, path: Path, mode: int = 0o644) -> ContextFile:
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
            size = path.stat().st_size
        except OSError as exc:
            raise BuildError(f"cannot read {path}: {exc}") from exc
        return cls(path, mode, size, digest.hexdigest())

    def open(self) -> BinaryIO:
        if isinstance(self.source, bytes):
            return io.BytesIO(self.source)
        return open(self.source, "rb")


def _code_files(project: Project) -> dict[str, ContextFile]:
    files = {}
    for rel in project.files:
        path = project.root / rel
        try:
            executable = bool(path.stat().st_mode & stat.S_IXUSR)
        except OSError as exc:
            raise BuildError(f"cannot read {path}: {exc}") from exc
        files[f"{CONTEXT_CODE}/{rel}"] = ContextFile.of_path(
            path, 0o755 if executable else 0o644)
    return files


def _hash(context: Mapping[str, ContextFile], extra: Mapping[str, object]) -> str:
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for name in sorted(context):
        entry = context[name]
        digest.update(f"{name}\0{entry.mode:o}\0{entry.size}\0{entry.sha256}\n".encode())
    return digest.hexdigest()


def plan_build(client: docker.DockerClient, project: Project, options: BuildOptions, *,
               cache_dir: Path, probe_labels: Mapping[str, str]) -> BuildPlan:
    """Resolve the base and the wheelhouse, render the Dockerfile, assemble and hash the context.

    ``probe_labels`` go on the short-lived container that inspects the base image.
    """
    if options.tag:
        parse_ref(options.tag)  # a bad tag fails before any work
    base = options.base or project.base or DEFAULT_BASE
    gpu = project.gpu if options.gpu is None else options.gpu
    ensure_base(client, base, make=options.make_base)
    info = probe_base(client, base, labels=probe_labels, cache_dir=cache_dir)
    if tuple(int(p) for p in info.python.split(".")) < (3, 10):
        raise BuildError(f"base image {base} has Python {info.python}; Shipyard's toolkit needs "
                         "Python 3.10 or newer")
    target = Target(python=info.python, machine=info.machine, glibc=info.glibc)
    cuda_in_base = bool(info.cudart)
    packages = options.cuda_packages if gpu and not cuda_in_base else ()
    requirements_file = (project.root / project.requirements_file
                         if project.requirements_file else None)
    wheels = resolve_wheelhouse(
        cache_dir, target, requirements=project.requirements,
        requirements_file=requirements_file, packages=packages,
        find_links=options.find_links, no_index=options.no_index, refresh=options.no_cache)
    context = _code_files(project)
    with tempfile.TemporaryDirectory(prefix="shipyard-toolkit-") as tmp:
        toolkit = toolkit_wheel(Path(tmp))
        context[f"{CONTEXT_WHEELS}/{toolkit.name}"] = ContextFile.of_bytes(toolkit.read_bytes())
    for wheel in wheels:
        context[f"{CONTEXT_WHEELS}/{wheel.name}"] = ContextFile.of_path(wheel)
    lock = lock_text((name.rsplit("/", 1)[-1], entry.sha256) for name, entry in context.items()
                     if name.startswith(f"{CONTEXT_WHEELS}/"))
    context[f"{CONTEXT_WHEELS}/{LOCK_FILE}"] = ContextFile.of_bytes(lock.encode())
    recipe = Recipe(project=project, base=base, python=info.executable, gpu=gpu,
                    cuda_in_base=cuda_in_base, extra_labels=dict(options.labels))
    dockerfile = render(recipe)
    context["Dockerfile"] = ContextFile.of_bytes(dockerfile.encode())
    context_hash = _hash(context, {"base_id": info.image_id,
                                   "network": options.allow_network})
    tag = str(parse_ref(options.tag or f"shipyard/{project.name}:{context_hash[:12]}"))
    return BuildPlan(recipe=recipe, dockerfile=dockerfile, context=context,
                     context_hash=context_hash, tag=tag)


def _tar(context: Mapping[str, ContextFile], dest: BinaryIO) -> None:
    """The context as a deterministic tar (sorted, owner root, mtime 0) written to ``dest``."""
    with tarfile.open(fileobj=dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(context):
            entry = context[name]
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = entry.size, entry.mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with entry.open() as handle:
                tar.addfile(info, handle)
    dest.seek(0)


def _find_built(client: docker.DockerClient, context_hash: str) -> str | None:
    with engine_errors("looking for an earlier build"):
        found = client.images.list(filters={"label": f"{CONTEXT_LABEL}={context_hash}"})
    return str(found[0].id) if found else None


def _tag(client: docker.DockerClient, image_id: str, tag: str) -> None:
    ref = parse_ref(tag)
    with engine_errors(f"tagging {tag}"):
        client.api.tag(image_id, ref.name, ref.tag)


def build_image(client: docker.DockerClient, project: Project, options: BuildOptions, *,
                cache_dir: Path, probe_labels: Mapping[str, str] | None = None,
                on_log: Callable[[str], None] | None = None) -> BuildResult:
    """Build (or reuse) the image for ``project`` and tag it; ``BuildError`` with the log tail."""
    labels = dict(probe_labels if probe_labels is not None else options.labels)
    labels.setdefault(MANAGED_LABEL, "true")
    plan = plan_build(client, project, options, cache_dir=cache_dir, probe_labels=labels)
    recipe_name = "gpu" if plan.recipe.gpu else "cpu"
    existing = None if options.no_cache else _find_built(client, plan.context_hash)
    if existing is not None:
        _tag(client, existing, plan.tag)
        return BuildResult(tag=plan.tag, image_id=existing, context_hash=plan.context_hash,
                           reused=True, base=plan.recipe.base, recipe=recipe_name,
                           dockerfile=plan.dockerfile)
    ref = parse_ref(plan.tag)
    log: list[str] = []
    image_id = ""
    with tempfile.TemporaryFile(prefix="shipyard-context-") as archive, \
            engine_errors(f"building {plan.tag}"):
        _tar(plan.context, archive)
        stream = client.api.build(
            fileobj=archive, custom_context=True, tag=f"{ref.name}:{ref.tag}",
            labels={CONTEXT_LABEL: plan.context_hash}, rm=True, forcerm=True, decode=True,
            nocache=options.no_cache, pull=False,
            network_mode=None if options.allow_network else "none",
        )
        for chunk in stream:
            if "stream" in chunk:
                text = str(chunk["stream"])
                log.extend(text.splitlines())
                if on_log is not None:
                    on_log(text)
            if "aux" in chunk and isinstance(chunk["aux"], dict):
                image_id = str(chunk["aux"].get("ID") or image_id)
            if "error" in chunk:
                tail = "\n".join([*log[-_LOG_TAIL:], str(chunk["error"]).strip()])
                raise BuildError(f"building {plan.tag} failed:\n{tail}")
    if not image_id:
        with engine_errors(f"inspecting {plan.tag}"):
            image_id = str(client.images.get(plan.tag).id)
    return BuildResult(tag=plan.tag, image_id=image_id, context_hash=plan.context_hash,
                       reused=False, base=plan.recipe.base, recipe=recipe_name,
                       dockerfile=plan.dockerfile)


def write_context(plan: BuildPlan, dest: Path) -> None:
    """Write the build context to a folder (``shipyard build --context-out``), to inspect it or
    build it with another tool (``docker build --network none DIR``)."""
    for name, entry in plan.context.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with entry.open() as source, open(path, "wb") as target:
            shutil.copyfileobj(source, target)
        os.chmod(path, entry.mode)
