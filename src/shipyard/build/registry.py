"""An OCI registry's HTTP API (distribution v2), as much as a push needs: does a tag exist.

Authentication follows the registry's ``WWW-Authenticate`` challenge: ``Basic`` (e.g.
Distribution with htpasswd) sends the credentials on each request; ``Bearer`` (Docker Hub, GHCR,
ECR, Harbor...) trades them for a token at the realm it names. Registries on a loopback address
are tried over HTTPS, then plain HTTP, as the Docker engine does (it treats 127.0.0.0/8 as an
insecure registry by default); ``insecure=True`` allows plain HTTP for any host.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from shipyard.build.errors import RegistryError
from shipyard.build.reference import DOCKER_HUB

__all__ = ["MANIFEST_TYPES", "Credentials", "RegistryClient", "api_host", "is_loopback"]

#: What a manifest HEAD accepts: single-platform and multi-platform, Docker and OCI.
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_DOCKER_HUB_API = "registry-1.docker.io"
_TIMEOUT_S = 30.0
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    #: where they came from (flag, environment, docker config), for messages
    source: str = "flag"


def api_host(registry: str) -> str:
    """Docker Hub's API does not live at its name."""
    return _DOCKER_HUB_API if registry == DOCKER_HUB else registry


def is_loopback(registry: str) -> bool:
    host = urllib.parse.urlsplit(f"//{registry}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """Reads manifests' digests from one registry; errors are :class:`RegistryError`."""

    def __init__(self, registry: str, credentials: Credentials | None = None, *,
                 insecure: bool = False, timeout: float = _TIMEOUT_S) -> None:
        self.registry = registry
        self.credentials = credentials
        self.timeout = timeout
        host = api_host(registry)
        self._bases = [f"https://{host}"]
        if insecure or is_loopback(registry):
            self._bases.append(f"http://{host}")
        handlers: list[Any] = []
        if is_loopback(registry):
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)
        self._base: str | None = None
        self._token: str | None = None

    def _open(self, request: urllib.request.Request) -> Any:
        return self._opener.open(request, timeout=self.timeout)

    def _basic(self) -> str:
        assert self.credentials is not None
        raw = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _refused(self, status: int) -> RegistryError:
        if self.credentials is None:
            return RegistryError(
                f"registry {self.registry} requires credentials (HTTP {status}): pass "
                "--registry-username with --registry-password-stdin, set "
                "SHIPYARD_REGISTRY_USERNAME and SHIPYARD_REGISTRY_PASSWORD, or `docker login`")
        return RegistryError(
            f"registry {self.registry} refused the credentials of user "
            f"{self.credentials.username!r} (from {self.credentials.source}; HTTP {status}): "
            "check the user name and password")

    def _bearer_token(self, challenge: str, scope: str) -> str:
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.pop("realm", "")
        if not realm:
            raise RegistryError(f"registry {self.registry} sent a Bearer challenge without realm")
        params.setdefault("scope", scope)
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(params)
        request = urllib.request.Request(url)
        if self.credentials is not None:
            request.add_header("Authorization", self._basic())
        try:
            with self._open(request) as response:
                body = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise self._refused(exc.code) from exc
            raise RegistryError(f"token service {realm} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(f"cannot get a token from {realm}: {exc}") from exc
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"token service {realm} answered without a token")
        return str(token)

    def _request(self, method: str, path: str, headers: dict[str, str], scope: str) -> Any:
        """One request, answering the auth challenge once; returns the open response."""
        last_error: Exception | None = None
        for base in [self._base] if self._base else self._bases:
            request = urllib.request.Request(base + path, method=method, headers=headers)
            if self._token:
                request.add_header("Authorization", f"Bearer {self._token}")
            try:
                response = self._open(request)
            except urllib.error.HTTPError as exc:
                if exc.code != 401:
                    self._base = base
                    return exc
                self._base = base
                challenge = exc.headers.get("WWW-Authenticate", "")
                return self._answer(challenge, base + path, method, headers, scope)
            except (urllib.error.URLError, ssl.SSLError, ConnectionError) as exc:
                last_error = exc
                continue
            self._base = base
            return response
        raise RegistryError(f"cannot reach registry {self.registry}: {last_error}")

    def _answer(self, challenge: str, url: str, method: str, headers: dict[str, str],
                scope: str) -> Any:
        request = urllib.request.Request(url, method=method, headers=headers)
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if self.credentials is None:
                raise self._refused(401)
            request.add_header("Authorization", self._basic())
        elif scheme == "bearer":
            self._token = self._bearer_token(challenge, scope)
            request.add_header("Authorization", f"Bearer {self._token}")
        else:
            raise RegistryError(f"registry {self.registry} asks for unsupported authentication "
                                f"{challenge!r}")
        try:
            return self._open(request)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise self._refused(exc.code) from exc
            return exc
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryError(f"cannot reach registry {self.registry}: {exc}") from exc

    def tag_digest(self, repository: str, tag: str) -> str | None:
        """The digest ``repository:tag`` points at, or None when the registry has no such tag."""
        scope = f"repository:{repository}:pull,push"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        response = self._request("HEAD", f"/v2/{repository}/manifests/{tag}", headers, scope)
        with response:
            status = int(response.status if hasattr(response, "status") else response.code)
            if status == 404:
                return None
            if status in (401, 403):
                raise self._refused(status)
            if status >= 400:
                raise RegistryError(f"registry {self.registry} answered HTTP {status} for "
                                    f"{repository}:{tag}")
            return str(response.headers.get("Docker-Content-Digest") or "") or "unknown"
