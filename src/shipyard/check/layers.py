"""An image's layers, read from its ``docker save`` stream in one pass, and the filesystem
they add up to.

Each layer is indexed on its own (paths, whiteouts, shebang lines, a few small files, AWS
credential findings), then the indexes are stacked bottom-up with OCI whiteout rules
(``.wh.<name>`` deletes a lower path, ``.wh..wh..opq`` hides a directory's lower contents).
Findings stay with their layer: a secret deleted by a later layer is still shipped.

Both ``docker save`` layouts are read: the legacy one (``<id>/layer.tar``) and the OCI one
(``blobs/sha256/<digest>``, Docker 25+; blobs may be compressed). ``manifest.json`` gives
the layer order. Layer indexes are cached by their content-addressed name, so checking many
images on one base scans the base once per process.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import tarfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

__all__ = [
    "Entry",
    "FileSystem",
    "ImageFiles",
    "LayerIndex",
    "SecretFinding",
    "index_layer",
    "is_shell_shebang",
    "read_image",
    "scan_text",
]

#: Bytes of a file read at a time while scanning; a match may straddle chunks, so the last
#: ``_OVERLAP`` bytes are scanned again with the next chunk.
SCAN_CHUNK = 1 << 20
_OVERLAP = 256
#: Small files whose content the checks need.
CAPTURED = frozenset({"etc/passwd", "etc/group"})
CAPTURE_MAX = 256 * 1024
#: Shell scripts up to this size are kept whole (the wrapper check reads them).
SCRIPT_MAX = 64 * 1024
SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "busybox"})
_CACHE_MAX = 64

# AWS access key ids: AKIA (long-term) or ASIA (temporary, STS), then 16 upper-case
# letters or digits. AWS's own documentation examples end in EXAMPLE and are ignored.
_KEY_ID = re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")
# A secret access key is 40 characters of base64 alphabet, assigned to a name that says so
# (credentials file, .env, JSON, YAML, shell export).
_SECRET = re.compile(
    rb"(?i)aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
)
# In an AWS credentials/config file any value counts.
_SECRET_IN_CREDENTIALS = re.compile(rb"(?im)^[ \t]*aws_secret_access_key[ \t]*=[ \t]*(\S+)")
_CREDENTIALS_FILE = re.compile(r"(?:^|/)\.aws/(?:credentials|config)$")
_EXAMPLE = b"EXAMPLE"


@dataclass(frozen=True)
class SecretFinding:
    path: str
    kind: str
    #: Masked: enough to recognise the key, not enough to use it.
    excerpt: str
    #: Index of the layer (0 = bottom); -1 when it comes from the config.
    layer: int = -1


@dataclass(frozen=True)
class Entry:
    path: str
    kind: str  # file, dir, symlink, hardlink, other
    mode: int = 0
    size: int = 0
    link: str = ""
    #: ``#!...`` first line of a regular file, if it has one.
    shebang: str = ""
    #: Whole content of captured files and small shell scripts.
    content: bytes | None = None

    @property
    def executable(self) -> bool:
        return self.kind in ("file", "hardlink") and bool(self.mode & 0o111)


@dataclass
class LayerIndex:
    name: str
    entries: dict[str, Entry] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)
    opaque_dirs: list[str] = field(default_factory=list)
    secrets: list[SecretFinding] = field(default_factory=list)
    size: int = 0


def _mask(value: bytes) -> str:
    text = value.decode("ascii", "replace")
    return f"{text[:4]}...{text[-4:]}" if len(text) > 12 else "****"


def scan_text(path: str, data: bytes) -> list[SecretFinding]:
    """AWS credentials in ``data`` (the content of ``path``); pure, for one chunk."""
    found: list[SecretFinding] = []
    if b"AKIA" in data or b"ASIA" in data:
        for match in _KEY_ID.finditer(data):
            if _EXAMPLE not in match.group(0):
                found.append(SecretFinding(path, "AWS access key id", _mask(match.group(0))))
    if b"ecret" in data or b"ECRET" in data:
        for match in _SECRET.finditer(data):
            if _EXAMPLE not in match.group(1):
                found.append(SecretFinding(path, "AWS secret access key",
                                           f"aws_secret_access_key={_mask(match.group(1))}"))
        if _CREDENTIALS_FILE.search(path):
            for match in _SECRET_IN_CREDENTIALS.finditer(data):
                value = match.group(1).strip(b"\"'")
                if value and _EXAMPLE not in value:
                    found.append(SecretFinding(path, "AWS credentials file",
                                               f"aws_secret_access_key={_mask(value)}"))
    return found


def _normalize(name: str) -> str:
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


def _scan_file(stream: IO[bytes], path: str, size: int, layer: LayerIndex
               ) -> tuple[str, bytes | None]:
    """Scan one regular file; returns its shebang line and, when wanted, its content."""
    shebang = ""
    keep: bytes | None = None
    seen: set[tuple[str, str]] = set()
    tail = b""
    first = True
    while True:
        chunk = stream.read(SCAN_CHUNK)
        if not chunk:
            break
        if first:
            first = False
            if chunk.startswith(b"#!"):
                shebang = chunk[2:512].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
            wanted = path in CAPTURED and size <= CAPTURE_MAX
            script = bool(shebang) and size <= SCRIPT_MAX and is_shell_shebang(shebang)
            if wanted or script:
                keep = chunk
        for finding in scan_text(path, tail + chunk):
            key = (finding.kind, finding.excerpt)
            if key not in seen:
                seen.add(key)
                layer.secrets.append(finding)
        tail = chunk[-_OVERLAP:]
    return shebang, keep


def is_shell_shebang(shebang: str) -> bool:
    """Whether a ``#!`` line (without the ``#!``) runs a shell, directly or through env."""
    words = shebang.split()
    if not words:
        return False
    program = posixpath.basename(words[0])
    if program == "env" and len(words) > 1:
        program = posixpath.basename(words[1])
    return program in SHELLS


def index_layer(fileobj: IO[bytes], name: str = "") -> LayerIndex:
    """Index one layer tarball (any compression tarfile knows), read as a stream."""
    layer = LayerIndex(name=name)
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            path = _normalize(member.name)
            if not path:
                continue
            parent, base = posixpath.split(path)
            if base == ".wh..wh..opq":
                layer.opaque_dirs.append(parent)
                continue
            if base.startswith(".wh."):
                layer.whiteouts.append(posixpath.join(parent, base[4:]))
                continue
            shebang, content = "", None
            if member.isfile():
                kind = "file"
                layer.size += member.size
                stream = tar.extractfile(member)
                if stream is not None:
                    shebang, content = _scan_file(stream, path, member.size, layer)
            elif member.isdir():
                kind = "dir"
            elif member.issym():
                kind = "symlink"
            elif member.islnk():
                kind = "hardlink"
            else:
                kind = "other"
            link = member.linkname
            if kind == "hardlink":
                link = _normalize(link)
            layer.entries[path] = Entry(path, kind, member.mode, member.size, link, shebang,
                                        content)
    return layer


class FileSystem:
    """The merged view of stacked layers: what a container of the image starts with."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def apply(self, layer: LayerIndex) -> None:
        # A layer's whiteouts hide lower layers only: apply them before its own entries.
        hidden = set(layer.whiteouts)
        opaque = set(layer.opaque_dirs)
        if hidden or opaque:
            for path in list(self._entries):
                if self._hidden(path, hidden, opaque):
                    del self._entries[path]
        self._entries.update(layer.entries)

    @staticmethod
    def _hidden(path: str, hidden: set[str], opaque: set[str]) -> bool:
        """Deleted by a whiteout (itself or an ancestor), or below an opaque directory."""
        if path in hidden:
            return True
        parent = posixpath.dirname(path)
        while True:
            if parent in hidden or parent in opaque:
                return True
            if not parent:
                return False
            parent = posixpath.dirname(parent)

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, path: str) -> Entry | None:
        """The entry at ``path`` as written (no symlink resolution)."""
        return self._entries.get(_normalize(path))

    def resolve(self, path: str, *, _depth: int = 0) -> str | None:
        """``path`` with every symlink resolved (physical ``..``); ``None`` if missing."""
        if _depth > 40:
            return None
        parts = [p for p in path.split("/") if p not in ("", ".")]
        current = ""
        for number, part in enumerate(parts, 1):
            if part == "..":
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, part) if current else part
            entry = self._entries.get(candidate)
            if entry is None:
                if number == len(parts):
                    return None
                # Layer tars may leave out parent directories: they exist implicitly.
                current = candidate
                continue
            if entry.kind == "symlink":
                base = "" if entry.link.startswith("/") else current
                target = posixpath.join(base, entry.link) if base else entry.link
                resolved = self.resolve(target, _depth=_depth + 1)
                if resolved is None:
                    return None
                current = resolved
            else:
                current = candidate
        return current

    def get(self, path: str) -> Entry | None:
        """The entry ``path`` leads to, symlinks followed."""
        resolved = self.resolve(path)
        return None if resolved is None else self._entries.get(resolved)

    def which(self, program: str, path_dirs: Iterable[str]) -> str | None:
        """Where ``program`` is found: itself if it has a slash, else the first PATH hit."""
        if "/" in program:
            entry = self.get(program)
            return "/" + _normalize(program) if entry is not None and entry.executable else None
        for folder in path_dirs:
            candidate = posixpath.join(folder, program)
            entry = self.get(candidate)
            if entry is not None and entry.executable:
                return candidate
        return None

    def under(self, prefix: str) -> list[Entry]:
        """Entries strictly below directory ``prefix`` (as written), sorted by path."""
        root = _normalize(prefix)
        root = root + "/" if root else ""
        return sorted((e for p, e in self._entries.items() if p.startswith(root)),
                      key=lambda e: e.path)


@dataclass
class ImageFiles:
    """All layers of an image, bottom first, and the filesystem they make."""

    layers: list[LayerIndex]
    filesystem: FileSystem

    def secrets(self) -> list[SecretFinding]:
        out: list[SecretFinding] = []
        for number, layer in enumerate(self.layers):
            out += [SecretFinding(f.path, f.kind, f.excerpt, number) for f in layer.secrets]
        return out


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


_cache: dict[str, LayerIndex] = {}
_cache_lock = threading.Lock()


def _cache_key(member: str) -> str | None:
    # Content-addressed names only: a legacy v1 id hashes the layer's chain id and parent,
    # an OCI blob name is its digest.
    if member.endswith("/layer.tar") and len(member.split("/", 1)[0]) == 64:
        return member
    if member.startswith("blobs/sha256/"):
        return member
    return None


def read_image(chunks: Iterator[bytes]) -> ImageFiles:
    """Index every layer of a ``docker save`` stream and stack them in manifest order."""
    found: dict[str, LayerIndex] = {}
    manifest: list[dict[str, list[str]]] = []
    reader = io.BufferedReader(_ChunkReader(chunks), SCAN_CHUNK)
    with tarfile.open(fileobj=reader, mode="r|") as outer:
        for member in outer:
            name = member.name
            if not member.isfile():
                continue
            if name == "manifest.json":
                stream = outer.extractfile(member)
                manifest = json.loads(stream.read()) if stream is not None else []
                continue
            if not (name.endswith("/layer.tar") or name.startswith("blobs/")):
                continue
            key = _cache_key(name)
            with _cache_lock:
                cached = _cache.get(key) if key else None
            if cached is not None:
                found[name] = cached
                continue
            stream = outer.extractfile(member)
            if stream is None:
                continue
            try:
                index = index_layer(stream, name)
            except tarfile.ReadError:
                continue  # an OCI config or manifest blob, not a layer
            found[name] = index
            if key:
                with _cache_lock:
                    if len(_cache) >= _CACHE_MAX:
                        _cache.pop(next(iter(_cache)))
                    _cache[key] = index
    order = [str(p) for p in manifest[0].get("Layers") or []] if manifest else []
    layers = [found[name] for name in order if name in found]
    filesystem = FileSystem()
    for layer in layers:
        filesystem.apply(layer)
    return ImageFiles(layers, filesystem)
