"""Pushing a built image to any OCI registry, with immutable tags and the digest recorded.

Credentials, first found wins: ``--registry-username``/``--registry-password`` (or
``--registry-password-stdin``), then ``SHIPYARD_REGISTRY_USERNAME``/``SHIPYARD_REGISTRY_PASSWORD``,
then the Docker config (``~/.docker/config.json``, credential helpers included), then none.

A tag, once pushed, names one image: before uploading, the registry is asked whether the tag
exists (which also checks the credentials, so a wrong password fails before any upload); an
existing tag is refused unless ``force``. The check and the push are two requests, so two
pushes racing for one new tag can both pass it: registries with server-side tag immutability
(ECR, Harbor, Artifactory) close that window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.build.base import engine_errors
from shipyard.build.errors import RegistryError, TagExists
from shipyard.build.reference import DOCKER_HUB, parse_ref
from shipyard.build.registry import Credentials, RegistryClient

if TYPE_CHECKING:
    import docker

__all__ = ["PASSWORD_ENV", "USERNAME_ENV", "PushResult", "push_image", "resolve_credentials"]

USERNAME_ENV = "SHIPYARD_REGISTRY_USERNAME"
PASSWORD_ENV = "SHIPYARD_REGISTRY_PASSWORD"
_DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class PushResult:
    reference: str
    digest: str
    image_id: str
    #: the digest the tag pointed at before a forced push ("" when the tag was new)
    replaced: str = ""

    def as_record(self) -> dict[str, object]:
        return {"reference": self.reference, "digest": self.digest, "image_id": self.image_id,
                "replaced": self.replaced}


def _docker_config_credentials(registry: str) -> Credentials | None:
    import docker.auth
    import docker.errors

    key = _DOCKER_HUB_AUTH_KEY if registry == DOCKER_HUB else registry
    try:
        found = docker.auth.resolve_authconfig(docker.auth.load_config(), key)
    except docker.errors.DockerException as exc:  # a broken credential helper
        raise RegistryError(f"cannot read the Docker credentials for {registry}: {exc}") from exc
    if not found or not found.get("Username"):
        return None
    return Credentials(str(found["Username"]), str(found.get("Password") or ""),
                       source="docker config")


def resolve_credentials(registry: str, *, username: str | None, password: str | None,
                        environ: Mapping[str, str]) -> Credentials | None:
    """The credentials for ``registry`` by the precedence in the module docstring."""
    if username or password:
        if not (username and password is not None):
            raise RegistryError("give both --registry-username and a password "
                                "(--registry-password or --registry-password-stdin)")
        return Credentials(username, password, source="command line")
    env_user, env_password = environ.get(USERNAME_ENV), environ.get(PASSWORD_ENV)
    if env_user:
        if env_password is None:
            raise RegistryError(f"{USERNAME_ENV} is set but {PASSWORD_ENV} is not")
        return Credentials(env_user, env_password, source="environment")
    return _docker_config_credentials(registry)


def _auth_config(registry: str, credentials: Credentials | None) -> dict[str, str] | None:
    if credentials is None:
        return None
    return {"username": credentials.username, "password": credentials.password,
            "serveraddress": _DOCKER_HUB_AUTH_KEY if registry == DOCKER_HUB else registry}


def _engine_push(client: docker.DockerClient, name: str, tag: str,
                 auth: dict[str, str] | None, on_log: Callable[[str], None] | None) -> str:
    digest = ""
    with engine_errors(f"pushing {name}:{tag}"):
        stream: Any = client.api.push(name, tag, auth_config=auth, stream=True, decode=True)
        for chunk in stream:
            if "error" in chunk:
                message = str(chunk["error"]).strip()
                if "unauthorized" in message or "authentication required" in message:
                    message += " (the registry refused the credentials for the upload)"
                raise RegistryError(f"pushing {name}:{tag} failed: {message}")
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
            status = chunk.get("status")
            if on_log is not None and status and not chunk.get("progressDetail"):
                on_log(f"{chunk.get('id', '')}: {status}".lstrip(": ") + "\n")
    if not digest:
        raise RegistryError(f"pushing {name}:{tag}: the engine reported no digest")
    return digest


def push_image(client: docker.DockerClient, reference: str, *,
               credentials: Credentials | None, force: bool = False, insecure: bool = False,
               on_log: Callable[[str], None] | None = None) -> PushResult:
    """Push ``reference`` (a local tag naming its registry); refuse an existing tag unless
    ``force``. Returns the digest the registry stored, checked by reading the tag back."""
    ref = parse_ref(reference)
    if ref.registry == DOCKER_HUB and ref.repository.startswith("library/"):
        raise RegistryError(f"{reference} names no registry: tag the image as "
                            "REGISTRY/REPOSITORY:TAG (e.g. registry.example.com/team/model:1)")
    with engine_errors(f"inspecting {reference}"):
        image_id = str(client.images.get(str(ref)).id)
    registry = RegistryClient(ref.registry, credentials, insecure=insecure)
    existing = registry.tag_digest(ref.repository, ref.tag)
    if existing and not force:
        raise TagExists(f"{ref} already exists in the registry (digest {existing}); tags are "
                        "immutable: push under a new tag, or pass --force to move this one")
    digest = _engine_push(client, ref.name, ref.tag, _auth_config(ref.registry, credentials),
                          on_log)
    stored = registry.tag_digest(ref.repository, ref.tag)
    if stored not in (digest, "unknown"):
        raise RegistryError(f"{ref} reads back as {stored}, not the pushed {digest}: another "
                            "push moved the tag at the same time")
    return PushResult(reference=str(ref), digest=digest, image_id=image_id,
                      replaced=existing or "")
