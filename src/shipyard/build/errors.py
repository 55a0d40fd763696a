"""The errors of ``shipyard build``; they extend the tree in :mod:`shipyard.errors`.

    ShipyardError
     ├── ValidationError
     │    └── ProjectError       the project folder cannot be built (no entry point, bad config)
     ├── ResourceInUse
     │    └── TagExists          the registry already has this tag (tags are immutable)
     └── BuildError             the image build, the wheelhouse or the base image failed
          └── RegistryError     the registry refused: credentials, unreachable, push failed

They live with the package that raises them so the build stays one self-contained feature;
``ProjectError`` and ``TagExists`` subclass the broad classes the CLI already maps to exit codes
(2 for bad input; ``ResourceInUse`` for a name that is taken).
"""

from __future__ import annotations

from shipyard.errors import ResourceInUse, ShipyardError, ValidationError

__all__ = ["BuildError", "ProjectError", "RegistryError", "TagExists"]


class ProjectError(ValidationError):
    """The project folder has nothing to run, or its configuration is invalid."""


class BuildError(ShipyardError):
    """Building the image (or its wheelhouse, or its base image) failed; the message says where."""


class RegistryError(BuildError):
    """The registry could not be reached or refused the request (wrong credentials, push error)."""


class TagExists(ResourceInUse):
    """The tag already exists in the registry and ``--force`` was not given."""
