"""``shipyard build``: one SageMaker image (``train`` and ``serve``) from a project folder.

- :mod:`~shipyard.build.project`: what in the folder becomes code, dependencies and recipe;
- :mod:`~shipyard.build.base`: the base image (made with debootstrap, or any Python base);
- :mod:`~shipyard.build.wheelhouse`: dependencies resolved on the host, installed offline;
- :mod:`~shipyard.build.recipe`: the Dockerfile and the contract rules it enforces;
- :mod:`~shipyard.build.gpu`: the GPU variant (CUDA libraries, never the driver);
- :mod:`~shipyard.build.image`: the context, its content hash and the engine build;
- :mod:`~shipyard.build.push`, :mod:`~shipyard.build.registry`: immutable-tag pushes;
- :mod:`~shipyard.build.records`: ``<data_dir>/builds.json``;
- :mod:`~shipyard.build.entrypoint`: ``shipyard-entry``, the images' entry point.

The names below load on first use (PEP 562): ``shipyard-entry`` imports this package in
every container start, and must not pay for the registry client, tarfile or subprocess. The
Docker SDK is imported only by the functions that talk to the engine.
"""

from __future__ import annotations

import typing

from shipyard._lazy import lazy_names

if typing.TYPE_CHECKING:
    from shipyard.build.base import DEFAULT_BASE, BaseInfo, make_base_image, probe_base
    from shipyard.build.errors import BuildError, ProjectError, RegistryError, TagExists
    from shipyard.build.image import (
        BuildOptions,
        BuildPlan,
        BuildResult,
        build_image,
        plan_build,
        write_context,
    )
    from shipyard.build.project import Project, load_project
    from shipyard.build.push import PushResult, push_image, resolve_credentials
    from shipyard.build.recipe import Recipe, render
    from shipyard.build.records import append_record, read_records
    from shipyard.build.reference import ImageRef, parse_ref
    from shipyard.build.registry import Credentials

__all__ = [
    "DEFAULT_BASE",
    "BaseInfo",
    "BuildError",
    "BuildOptions",
    "BuildPlan",
    "BuildResult",
    "Credentials",
    "ImageRef",
    "Project",
    "ProjectError",
    "PushResult",
    "Recipe",
    "RegistryError",
    "TagExists",
    "append_record",
    "build_image",
    "load_project",
    "make_base_image",
    "parse_ref",
    "plan_build",
    "probe_base",
    "push_image",
    "read_records",
    "render",
    "resolve_credentials",
    "write_context",
]

_LAZY = {
    "BaseInfo": "shipyard.build.base",
    "BuildError": "shipyard.build.errors",
    "BuildOptions": "shipyard.build.image",
    "BuildPlan": "shipyard.build.image",
    "BuildResult": "shipyard.build.image",
    "Credentials": "shipyard.build.registry",
    "DEFAULT_BASE": "shipyard.build.base",
    "ImageRef": "shipyard.build.reference",
    "Project": "shipyard.build.project",
    "ProjectError": "shipyard.build.errors",
    "PushResult": "shipyard.build.push",
    "Recipe": "shipyard.build.recipe",
    "RegistryError": "shipyard.build.errors",
    "TagExists": "shipyard.build.errors",
    "append_record": "shipyard.build.records",
    "build_image": "shipyard.build.image",
    "load_project": "shipyard.build.project",
    "make_base_image": "shipyard.build.base",
    "parse_ref": "shipyard.build.reference",
    "plan_build": "shipyard.build.image",
    "probe_base": "shipyard.build.base",
    "push_image": "shipyard.build.push",
    "read_records": "shipyard.build.records",
    "render": "shipyard.build.recipe",
    "resolve_credentials": "shipyard.build.push",
    "write_context": "shipyard.build.image",
}

__getattr__, __dir__ = lazy_names(__name__, globals(), _LAZY)
