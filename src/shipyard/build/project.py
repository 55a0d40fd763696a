"""Project detection: what in a folder becomes the image's code, dependencies and recipe.

A project folder holds (all optional, but at least one entry point):

- ``train.py``: the training script ``train`` runs (``SAGEMAKER_PROGRAM``);
- ``inference.py``: the module ``serve`` loads (``model_fn``/``input_fn``/``predict_fn``...);
- ``requirements.txt``: resolved into a wheelhouse on the host and installed in the image;
- ``Dockerfile.fragment``: Dockerfile instructions run as root after the dependencies;
- ``shipyard.toml``: a ``[build]`` table overriding any of the above (see :data:`CONFIG_KEYS`).

Every other file is copied into the image's code folder, except hidden files and folders
(``.git``, ``.env``, ``.aws``: secrets must not end up in a layer), ``__pycache__``, ``*.pyc``
and the ``exclude`` patterns.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.build.errors import ProjectError

__all__ = [
    "CONFIG_FILE",
    "CONFIG_KEYS",
    "DEFAULT_FRAGMENT",
    "DEFAULT_REQUIREMENTS",
    "DEFAULT_SERVE",
    "DEFAULT_TRAIN",
    "Project",
    "check_fragment",
    "image_name",
    "load_project",
]

CONFIG_FILE = "shipyard.toml"
DEFAULT_TRAIN = "train.py"
DEFAULT_SERVE = "inference.py"
DEFAULT_REQUIREMENTS = "requirements.txt"
DEFAULT_FRAGMENT = "Dockerfile.fragment"
#: The keys of ``[build]`` in shipyard.toml, with their types; anything else is a typo.
CONFIG_KEYS: Mapping[str, type] = {
    "name": str,
    "train": str,
    "serve": str,
    "requirements": str,
    "fragment": str,
    "base": str,
    "gpu": bool,
    "multi-model": bool,
    "exclude": list,
}
#: Instructions a fragment may not use: they would break the one-image contract the recipe
#: guarantees (a second FROM starts a new image; the recipe owns the user and entry point).
FORBIDDEN_INSTRUCTIONS = frozenset({"FROM", "ENTRYPOINT", "CMD", "USER"})
_ALWAYS_EXCLUDED = ("__pycache__", "*.pyc", "*.pyo")
_NAME_RE = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class Project:
    """A project folder, read and checked; paths in ``files`` are relative POSIX paths."""

    root: Path
    name: str
    train_program: str | None
    serve_program: str | None
    requirements: str = ""
    #: the requirements file's path relative to ``root`` ("" when there is none)
    requirements_file: str = ""
    fragment: str = ""
    files: tuple[str, ...] = ()
    base: str | None = None
    gpu: bool = False
    multi_model: bool = True
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def trains(self) -> bool:
        return self.train_program is not None

    @property
    def serves(self) -> bool:
        return self.serve_program is not None


def _read_config(root: Path) -> dict[str, Any]:
    path = root / CONFIG_FILE
    if not path.is_file():
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 needs the tomli backport for shipyard.toml
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProjectError(f"cannot read {path}: {exc}") from exc
    build = data.get("build", {})
    if not isinstance(build, dict):
        raise ProjectError(f"{path}: [build] must be a table")
    for key, value in build.items():
        expected = CONFIG_KEYS.get(key)
        if expected is None:
            raise ProjectError(f"{path}: unknown key build.{key} "
                               f"(known: {', '.join(sorted(CONFIG_KEYS))})")
        if not isinstance(value, expected):
            raise ProjectError(f"{path}: build.{key} must be a {expected.__name__}")
    return build


def _entry(root: Path, config: Mapping[str, Any], key: str, default: str) -> str | None:
    configured = config.get(key)
    name = configured or default
    if not (root / name).is_file():
        if configured:
            raise ProjectError(f"{CONFIG_FILE} names build.{key} = {name!r}, "
                               f"which is not a file in {root}")
        return None
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ProjectError(f"build.{key} = {name!r} must be a path inside the project")
    return Path(name).as_posix()


def _optional_text(root: Path, config: Mapping[str, Any], key: str, default: str) -> str:
    configured = config.get(key)
    path = root / (configured or default)
    if not path.is_file():
        if configured:
            raise ProjectError(f"{CONFIG_FILE} names build.{key} = {configured!r}, "
                               f"which is not a file in {root}")
        return ""
    return path.read_text(encoding="utf-8")


def check_fragment(text: str) -> None:
    """Refuse a fragment that uses an instruction the recipe owns (``ProjectError``)."""
    logical = re.sub(r"\\\r?\n", " ", text)
    for number, line in enumerate(logical.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        instruction = stripped.split(None, 1)[0].upper()
        if instruction in FORBIDDEN_INSTRUCTIONS:
            raise ProjectError(
                f"the Dockerfile fragment may not use {instruction} (line {number}): the recipe "
                "sets the base image, the non-root user and the exec-form entry point itself; "
                "use --base for another base image"
            )


def _excluded(rel: str, is_dir: bool, patterns: tuple[str, ...]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    if name.startswith("."):
        return True
    for pattern in patterns:
        if pattern.endswith("/"):
            if is_dir and (fnmatch.fnmatch(rel, pattern[:-1]) or fnmatch.fnmatch(name,
                                                                                pattern[:-1])):
                return True
        elif fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(name, pattern):
            return True
    return False


def _walk(root: Path, patterns: tuple[str, ...], skip: set[str]) -> tuple[str, ...]:
    real_root = root.resolve()
    found: list[str] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        base = Path(folder).relative_to(root)
        kept = []
        for d in sorted(dirs):
            rel = (base / d).as_posix()
            if (Path(folder) / d).is_symlink():
                raise ProjectError(f"{rel} is a symbolic link to a folder: copy it in instead")
            if not _excluded(rel, True, patterns):
                kept.append(d)
        dirs[:] = kept
        for n in sorted(names):
            rel = (base / n).as_posix()
            if rel in skip or _excluded(rel, False, patterns):
                continue
            path = Path(folder) / n
            if path.is_symlink():
                target = path.resolve()
                if not target.is_file() or not target.is_relative_to(real_root):
                    raise ProjectError(f"{rel} links outside the project ({target})")
            found.append(rel)
    return tuple(sorted(found))


def image_name(text: str) -> str:
    """A folder name as a valid repository name (lower case, ``[a-z0-9._-]``)."""
    name = _NAME_RE.sub("-", text.lower()).strip("-._")
    return name or "model"


def load_project(root: str | os.PathLike[str]) -> Project:
    """Read a project folder; ``ProjectError`` when it has no entry point or a bad config."""
    folder = Path(root)
    if not folder.is_dir():
        raise ProjectError(f"{folder} is not a folder")
    folder = folder.resolve()
    config = _read_config(folder)
    train = _entry(folder, config, "train", DEFAULT_TRAIN)
    serve = _entry(folder, config, "serve", DEFAULT_SERVE)
    if train is None and serve is None:
        raise ProjectError(
            f"nothing to run in {folder}: add {DEFAULT_TRAIN} (for `train`) and/or "
            f"{DEFAULT_SERVE} (for `serve`), or name them in {CONFIG_FILE} [build]"
        )
    fragment = _optional_text(folder, config, "fragment", DEFAULT_FRAGMENT)
    check_fragment(fragment)
    requirements_file = str(config.get("requirements") or DEFAULT_REQUIREMENTS)
    fragment_file = str(config.get("fragment") or DEFAULT_FRAGMENT)
    exclude = config.get("exclude", [])
    if not all(isinstance(p, str) for p in exclude):
        raise ProjectError(f"{CONFIG_FILE}: build.exclude must be a list of glob patterns")
    patterns = (*_ALWAYS_EXCLUDED, *exclude)
    # Requirements are installed from the wheelhouse, not at run time: the toolkit would try
    # `pip install -r requirements.txt` in the code folder, and containers have no index.
    skip = {CONFIG_FILE, requirements_file, fragment_file}
    requirements = _optional_text(folder, config, "requirements", DEFAULT_REQUIREMENTS)
    return Project(
        root=folder,
        name=image_name(str(config.get("name") or folder.name)),
        train_program=train,
        serve_program=serve,
        requirements=requirements,
        requirements_file=requirements_file if (folder / requirements_file).is_file() else "",
        fragment=fragment,
        files=_walk(folder, patterns, skip),
        base=config.get("base"),
        gpu=bool(config.get("gpu", False)),
        multi_model=bool(config.get("multi-model", True)),
        config=config,
    )
