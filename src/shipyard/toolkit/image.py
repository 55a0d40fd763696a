"""What the toolkit puts into every image: the part of ``shipyard`` it needs, its console
scripts and the Python it runs on. Data only; ``shipyard build`` packs it
(:func:`shipyard.build.wheelhouse.toolkit_wheel`).

The platform (API, control plane, CLI, runtimes) stays out: it needs third-party packages the
image lacks, and platform changes must not change the image. A module added to the toolkit's
imports from outside ``shipyard/toolkit/`` belongs in :data:`TOOLKIT_FILES`
(``tests/test_build.py`` checks that the wheel holds everything it imports).
"""

from __future__ import annotations

__all__ = ["TOOLKIT_FILES", "TOOLKIT_REQUIRES_PYTHON", "TOOLKIT_SCRIPTS"]

#: Paths under the ``shipyard`` package's parent folder; one ending in ``/`` is a whole
#: subpackage.
TOOLKIT_FILES = (
    "shipyard/__init__.py",
    "shipyard/_lazy.py",
    "shipyard/errors.py",
    "shipyard/http1.py",
    "shipyard/contract/",
    "shipyard/toolkit/",
    "shipyard/build/__init__.py",
    "shipyard/build/entrypoint.py",
    "shipyard/build/gpu.py",
)
#: Console scripts: the two SageMaker entry points (as pyproject.toml's ``[project.scripts]``)
#: and the image's dispatcher. The platform CLI is left out: it needs click, boto3 and docker,
#: which the image does not have.
TOOLKIT_SCRIPTS = {
    "train": "shipyard.toolkit.train:main",
    "serve": "shipyard.toolkit.serve:main",
    "shipyard-entry": "shipyard.build.entrypoint:main",
}
#: The oldest Python the toolkit runs on (the wheel's ``Requires-Python``).
TOOLKIT_REQUIRES_PYTHON = ">=3.10"
