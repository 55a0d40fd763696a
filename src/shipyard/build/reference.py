"""Image references: ``[registry[:port]/]repository[:tag]``, parsed as the Docker engine does.

The first path component is a registry host when it contains ``.`` or ``:`` or is
``localhost``; otherwise the image lives on Docker Hub (``docker.io``, repository
``library/NAME`` for one-component names). A missing tag means ``latest``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shipyard.build.errors import ProjectError

__all__ = ["DOCKER_HUB", "ImageRef", "parse_ref"]

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"
# Docker's grammar: lower-case path components separated by / ; tags up to 128 characters.
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str

    @property
    def name(self) -> str:
        """The repository as the engine names it (``registry/repo``, Hub names bare)."""
        if self.registry == DOCKER_HUB:
            return self.repository.removeprefix("library/")
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"


def parse_ref(ref: str) -> ImageRef:
    """Parse ``ref``; ``ProjectError`` (bad input) when it is not a valid reference.

    Digests (``@sha256:...``) are refused: a build produces tags, and a push needs one.
    """
    if "@" in ref:
        raise ProjectError(f"{ref!r}: give a tag, not a digest")
    head, _, last = ref.rpartition("/")
    name, tag = last, DEFAULT_TAG
    if ":" in last:
        name, _, tag = last.partition(":")
    path = f"{head}/{name}" if head else name
    first, _, rest = path.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, path
        if "/" not in repository:
            repository = f"library/{repository}"
    if not all(_COMPONENT.match(c) for c in repository.split("/")):
        raise ProjectError(f"{ref!r} is not a valid image name (lower-case letters, digits, "
                           "and . _ - between them)")
    if not _TAG.match(tag):
        raise ProjectError(f"{ref!r}: {tag!r} is not a valid tag")
    return ImageRef(registry=registry, repository=repository, tag=tag)
