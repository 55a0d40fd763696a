"""Local data and output locations: ``file://`` URIs and plain paths, one reading of them."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from shipyard.errors import DataSourceError, ValidationError


def local_path(uri: str) -> Path:
    """The absolute host path named by a ``file://`` URI or a plain path (it need not exist)."""
    if uri.startswith("file:"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise DataSourceError(f"{uri}: file:// URIs must name a local absolute path")
        return Path(unquote(parsed.path)).absolute()
    if "://" in uri:
        raise ValidationError(f"{uri}: unsupported scheme (use s3:// or file://)")
    return Path(uri).expanduser().absolute()
