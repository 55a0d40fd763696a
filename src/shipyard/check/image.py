"""An image as the static checks see it: its config (``docker inspect``) and its layers
(``docker save``), read from the local engine without running anything.

This module is the one place where the check package talks to the Docker SDK for images;
SDK and transport errors become ``shipyard.errors`` through the runtime's own boundary
(``runtimes.docker.translate_errors``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.runtimes.docker import translate_errors

if TYPE_CHECKING:
    import docker

__all__ = ["DockerImages", "ImageConfig"]

#: Bytes per read of the ``docker save`` stream.
SAVE_CHUNK = 1 << 20
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image's config the contract cares about."""

    reference: str
    id: str
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    user: str = ""
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    size: int = 0
    #: Uncompressed layer digests, bottom first.
    layers: tuple[str, ...] = ()

    @classmethod
    def from_inspect(cls, reference: str, attrs: dict[str, Any]) -> ImageConfig:
        config = attrs.get("Config") or {}
        env: dict[str, str] = {}
        for item in config.get("Env") or []:
            key, _, value = str(item).partition("=")
            env[key] = value
        return cls(
            reference=reference,
            id=str(attrs.get("Id", "")),
            entrypoint=tuple(str(a) for a in config.get("Entrypoint") or ()),
            cmd=tuple(str(a) for a in config.get("Cmd") or ()),
            user=str(config.get("User") or ""),
            env=env,
            labels={str(k): str(v) for k, v in (config.get("Labels") or {}).items()},
            working_dir=str(config.get("WorkingDir") or ""),
            size=int(attrs.get("Size") or 0),
            layers=tuple(str(x) for x in (attrs.get("RootFS") or {}).get("Layers") or ()),
        )

    @property
    def path_dirs(self) -> list[str]:
        """Where ``docker run IMAGE train`` looks for ``train``: the image's PATH."""
        return [d for d in self.env.get("PATH", DEFAULT_PATH).split(":") if d]


class DockerImages:
    """Reads images from the local engine."""

    def __init__(self, client: docker.DockerClient) -> None:
        self._api = client.api

    def inspect(self, reference: str) -> ImageConfig:
        with translate_errors(image=reference):
            attrs = self._api.inspect_image(reference)
        return ImageConfig.from_inspect(reference, attrs)

    def save(self, reference: str) -> Iterator[bytes]:
        """The ``docker save`` tarball of ``reference``, streamed in chunks."""
        with translate_errors(image=reference):
            stream = self._api.get_image(reference, chunk_size=SAVE_CHUNK)
        with translate_errors(image=reference):
            yield from stream
