"""Each package's public surface is its ``__all__``; importing the light packages has no effects.

After httpx's tests/test_exported_members.py: every name in ``__all__`` exists, and every
public name a package defines (in itself or its submodules) is listed. Names merely imported
from elsewhere (``Path``, ``ClassVar``, a sibling package's error) are not part of it. A
package that loads its names on first use (PEP 562 ``__getattr__`` and ``__dir__``, as
``shipyard.build`` does) is judged by the names it resolves to.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

PACKAGES = [
    "shipyard.errors",
    "shipyard.contract",
    "shipyard.control",
    "shipyard.runtimes",
    "shipyard.toolkit",
    "shipyard.check",
    "shipyard.api",
    "shipyard.build",
]


def _origin(obj: object, package: str) -> str:
    """The module an exported object comes from; plain constants belong to ``package``."""
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return str(obj.__module__)
    kind_module = type(obj).__module__
    # ``from __future__ import annotations`` and typing forms are imports, not definitions.
    if kind_module in {"__future__", "typing", "typing_extensions"}:
        return kind_module
    return package


def _namespace(module: ModuleType) -> dict[str, object]:
    """Every name of ``module``, lazily loaded ones resolved (``dir`` lists them)."""
    return {member: getattr(module, member) for member in dir(module)}


def _defined_here(module: ModuleType) -> set[str]:
    name = module.__name__
    return {
        member
        for member, obj in _namespace(module).items()
        if not member.startswith("_")
        and not isinstance(obj, ModuleType)
        and (_origin(obj, name) == name or _origin(obj, name).startswith(name + "."))
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_all_names_exist_once(package: str) -> None:
    module = importlib.import_module(package)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "duplicates in __all__"
    missing = [name for name in exported if not hasattr(module, name)]
    assert missing == []
    assert all(not name.startswith("_") or name == "__version__" for name in exported)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_defined_is_exported(package: str) -> None:
    module = importlib.import_module(package)
    assert _defined_here(module) - set(module.__all__) == set()
    # Whatever __all__ names from elsewhere is a deliberate re-export, still a public name.
    public = {n for n, o in _namespace(module).items()
              if not n.startswith("_") and not isinstance(o, ModuleType)}
    assert set(module.__all__) - public == set()


@pytest.mark.parametrize("package", PACKAGES)
def test_star_import_gives_exactly_all(package: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(importlib.import_module(package).__all__)


def test_origin_rule_sees_through_imports() -> None:
    # The helper itself must be able to fail: an imported class, a future import, a constant.
    fake = ModuleType("pkg")
    fake.Path = Path  # type: ignore[attr-defined]
    exec("from __future__ import annotations\nLIMIT = 5\n"
         "class Local: pass\nLocal.__module__ = 'pkg.sub'\n", fake.__dict__)
    assert _defined_here(fake) == {"LIMIT", "Local"}


# -- importing has no side effects -------------------------------------------------------------

_PROBE = """
import json, os, sys
before, env_before = set(sys.modules), dict(os.environ)
import importlib
importlib.import_module(sys.argv[1])
print(json.dumps({
    "new": sorted(set(sys.modules) - before),
    "env_changed": dict(os.environ) != env_before,
}))
"""

# The toolkit runs inside every image, with nothing but the standard library available.
STDLIB_ONLY = ["shipyard.contract", "shipyard.toolkit", "shipyard.toolkit.train",
               "shipyard.errors", "shipyard.build.entrypoint", "shipyard.build.gpu",
               "shipyard.http1", "shipyard.kinds", "shipyard.contract.archives"]
# Documented: "Importing this package never imports the Docker SDK".
NO_PLATFORM_SDKS = [*STDLIB_ONLY, "shipyard.runtimes", "shipyard.check", "shipyard.api",
                    "shipyard.build"]
PLATFORM_SDKS = {"docker", "boto3", "botocore", "click", "requests", "urllib3", "s3transfer",
                 "moto", "numpy"}


def _import_in_fresh_process(module: str, tmp_path: Path) -> tuple[dict[str, object], Path]:
    home, cwd, tmp = tmp_path / "home", tmp_path / "cwd", tmp_path / "tmp"
    for folder in (home, cwd, tmp):
        folder.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "PYTHONDONTWRITEBYTECODE": "1",
        # Where the toolkit would find the contract root if it looked at import time.
        "SAGEMAKER_BASE_DIR": str(tmp_path / "opt-ml"),
    }
    result = subprocess.run([sys.executable, "-c", _PROBE, module], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), tmp_path


@pytest.mark.parametrize("module", NO_PLATFORM_SDKS)
def test_import_touches_nothing(module: str, tmp_path: Path) -> None:
    opt_ml_existed = os.path.exists("/opt/ml")
    report, root = _import_in_fresh_process(module, tmp_path)
    for folder in ("home", "cwd", "tmp"):
        assert list((root / folder).iterdir()) == [], folder
    assert not (root / "opt-ml").exists()
    assert os.path.exists("/opt/ml") == opt_ml_existed
    assert report["env_changed"] is False
    new = report["new"]
    assert isinstance(new, list)
    assert module in new  # the probe really imported it fresh
    assert {m.split(".")[0] for m in new} & PLATFORM_SDKS == set()


@pytest.mark.parametrize("module", STDLIB_ONLY)
def test_import_needs_only_the_standard_library(module: str, tmp_path: Path) -> None:
    report, _ = _import_in_fresh_process(module, tmp_path)
    new = report["new"]
    assert isinstance(new, list)
    outside = {m.split(".")[0] for m in new} - set(sys.stdlib_module_names) - {"shipyard"}
    assert outside == set()


def test_the_cli_does_not_load_the_control_plane(tmp_path: Path) -> None:
    # Settings live at the package's top: a command that only talks to the server (and
    # `shipyard --help`) must not pay for the control plane, the API server or botocore's
    # models.
    report, _ = _import_in_fresh_process("shipyard.cli", tmp_path)
    new = report["new"]
    assert isinstance(new, list)
    assert "shipyard.cli" in new
    assert [m for m in new if m.startswith(("shipyard.control", "shipyard.api.server",
                                            "shipyard.api.app"))] == []
