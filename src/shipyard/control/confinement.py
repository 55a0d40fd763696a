"""Which host folders ``file://`` URIs and plain local paths may name.

Anyone holding an API key can name a host location: an input channel is mounted into a
container that runs as root, an output is written by the server itself. So every local
location is resolved (symbolic links and ``..``, with ``os.path.realpath``) and then:

* refused when it is ``/``, a system folder (``/etc``, ``/proc``, ``/sys``, ``/dev``,
  ``/boot``) or inside one;
* refused when it is the data directory, inside it, or contains it: the data directory holds
  ``credentials.json`` (the API's secret keys) and every job's state. The one exception is
  ``<data_dir>/output``, the CLI's default ``S3OutputPath``, which holds job outputs only;
* refused unless it lies inside one of the ``file_roots`` setting's folders.

The rule is applied when a request is created (nothing is written for a refused request) and
again where the location is used, since a folder may have become a symbolic link since.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shipyard.control.locations import local_path
from shipyard.errors import ValidationError
from shipyard.settings import Settings

__all__ = ["OUTPUT_FOLDER", "SYSTEM_FOLDERS", "FileRoots"]

SYSTEM_FOLDERS = ("/etc", "/proc", "/sys", "/dev", "/boot")
#: Below the data directory, the one folder local locations may name (job outputs only).
OUTPUT_FOLDER = "output"
_HOW_TO_ALLOW = ("local locations must lie inside a folder of the file_roots setting "
                 "(SHIPYARD_FILE_ROOTS, or \"file_roots\" in config.json)")


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(path))


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@dataclass(frozen=True)
class FileRoots:
    """The allowed folders and the data directory, both already resolved."""

    roots: tuple[Path, ...]
    data_dir: Path

    @classmethod
    def of(cls, settings: Settings) -> FileRoots:
        return cls.allowing(settings.file_roots, data_dir=settings.data_dir)

    @classmethod
    def allowing(cls, roots: tuple[Path, ...] | list[Path], *, data_dir: Path) -> FileRoots:
        return cls(tuple(_real(root) for root in roots), _real(data_dir))

    def path(self, uri: str, what: str = "location") -> Path:
        """The real host path ``uri`` names, once it is allowed (it need not exist).

        Callers use the returned path, not ``uri`` again: it is the one that was checked.
        Raises ``ValidationError`` (SageMaker's ValidationException) naming ``what``.
        """
        real = _real(local_path(uri))
        reason = self.refusal(real)
        if reason is not None:
            raise ValidationError(f"{what} {uri}: {reason}; {_HOW_TO_ALLOW}")
        return real

    def refusal(self, real: Path) -> str | None:
        """Why the resolved path ``real`` may not be used, or None when it may."""
        if real == real.parent:
            return "the root folder may not be used"
        for folder in SYSTEM_FOLDERS:
            system = _real(folder)
            if _within(real, system) or _within(real, Path(folder)):
                return f"{folder} is a system folder"
        data = self.data_dir
        if _within(real, data / OUTPUT_FOLDER):
            return None
        if _within(real, data):
            return f"it is inside the Shipyard data directory {data}"
        if _within(data, real):
            return f"it contains the Shipyard data directory {data}"
        if not any(_within(real, root) for root in self.roots):
            allowed = ", ".join(str(root) for root in self.roots) or "none"
            return f"it is outside the allowed folders ({allowed})"
        return None
