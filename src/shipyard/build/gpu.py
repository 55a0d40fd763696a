"""The GPU variant of the recipe: CUDA user-space libraries in the image, never the driver.

AWS's rule ("How Amazon SageMaker Runs Your Training Image"): containers must be nvidia-docker
compatible; include only the CUDA toolkit and do not bundle NVIDIA drivers. The driver
(``libcuda.so``, ``libnvidia-ml.so``...) must match the host's kernel module, so the NVIDIA
container runtime mounts the host's copy into the container at start; one baked into the image
would shadow it and break on any other host.

So ``--gpu``:

- installs the CUDA runtime from NVIDIA's pip wheels (``nvidia-cuda-runtime-cu12`` and any
  other ``nvidia-*`` wheels the requirements pull in, e.g. through ``torch``) from the
  wheelhouse, unless the base image already has ``libcudart`` (an ``nvidia/cuda`` base);
- registers the wheels' ``lib`` folders with the dynamic linker (``/etc/ld.so.conf.d``), so
  ``libcudart.so.12`` resolves without ``LD_LIBRARY_PATH``;
- sets ``NVIDIA_VISIBLE_DEVICES``/``NVIDIA_DRIVER_CAPABILITIES``/``NVIDIA_REQUIRE_CUDA``, the
  variables the NVIDIA container runtime reads (as ``nvidia/cuda`` images do);
- fails the build if a driver library is found in the image;
- makes the entry point refuse to start without a usable GPU (``SHIPYARD_REQUIRE_GPU``), with a
  message that says why, instead of a framework silently falling back to the CPU.

This module also runs inside images (``python3 -m shipyard.build.gpu``): standard library only.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "CUDA_MAJOR",
    "CUDA_PACKAGES",
    "DRIVER_LIBRARY_PATTERNS",
    "LD_CONF_FILE",
    "REQUIRE_GPU_ENV",
    "cuda_library_dirs",
    "driver_guard_command",
    "gpu_environment",
    "gpu_problem",
]

CUDA_MAJOR = 12
#: The CUDA wheels every GPU image gets (the runtime: ``libcudart``); frameworks bring more.
CUDA_PACKAGES = (f"nvidia-cuda-runtime-cu{CUDA_MAJOR}",)
LD_CONF_FILE = "/etc/ld.so.conf.d/shipyard-cuda.conf"
REQUIRE_GPU_ENV = "SHIPYARD_REQUIRE_GPU"
#: Libraries that belong to the driver, which the NVIDIA container runtime mounts from the
#: host (nvidia-container-toolkit's driver library list); ``stubs/`` copies are link-time only.
DRIVER_LIBRARY_PATTERNS = ("libcuda.so*", "libnvidia-*.so*", "libcudadebugger.so*")
_CUDA_SUCCESS = 0


def gpu_environment(require_gpu: bool = True) -> dict[str, str]:
    """Variables the NVIDIA container runtime reads, and ours."""
    return {
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
        "NVIDIA_REQUIRE_CUDA": f"cuda>={CUDA_MAJOR}.0",
        REQUIRE_GPU_ENV: "true" if require_gpu else "false",
    }


def driver_guard_command() -> str:
    """A shell command failing the build when a driver library is in the image's file system."""
    names = " -o ".join(f"-name '{p}'" for p in DRIVER_LIBRARY_PATTERNS)
    return (
        f"found=$(find / -xdev \\( {names} \\) -not -path '*/stubs/*' 2>/dev/null | head -5); "
        'if [ -n "$found" ]; then echo "NVIDIA driver libraries must not be in the image '
        '(the NVIDIA container runtime mounts the host driver): $found" >&2; exit 1; fi'
    )


def cuda_library_dirs() -> list[str]:
    """The ``lib`` folders of the installed ``nvidia-*`` wheels (``nvidia/<part>/lib``)."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    found: list[str] = []
    for root in spec.submodule_search_locations:
        for lib in sorted(Path(root).glob("*/lib")):
            if lib.is_dir() and any(lib.glob("*.so*")):
                found.append(str(lib))
    return found


def _call(lib: ctypes.CDLL, name: str, *args: object) -> int:
    return int(getattr(lib, name)(*args))


def gpu_problem(environ: Mapping[str, str]) -> str | None:
    """Why this container cannot use a GPU, or None when the driver sees at least one.

    Loads the driver library the NVIDIA runtime mounts (``libcuda.so.1``) and asks it for
    devices: the same thing a framework does first, but with an explanation.
    """
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        visible = environ.get("NVIDIA_VISIBLE_DEVICES", "")
        return ("this image was built with --gpu and needs an NVIDIA GPU, but no NVIDIA driver "
                "is in the container (libcuda.so.1 not found): run it with the NVIDIA container "
                "runtime (`docker run --gpus all ...`) on a host with a GPU and driver "
                f"(NVIDIA_VISIBLE_DEVICES={visible or 'unset'}); set {REQUIRE_GPU_ENV}=false to "
                "start without one")
    status = _call(libcuda, "cuInit", 0)
    if status != _CUDA_SUCCESS:
        return (f"the NVIDIA driver is present but cuInit failed with CUDA error {status} "
                "(no device visible, or a driver older than the CUDA "
                f"{CUDA_MAJOR} runtime in the image needs)")
    count = ctypes.c_int(0)
    status = _call(libcuda, "cuDeviceGetCount", ctypes.byref(count))
    if status != _CUDA_SUCCESS or count.value < 1:
        return f"the NVIDIA driver sees no GPU (cuDeviceGetCount: error {status}, {count.value})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m shipyard.build.gpu ld-conf``: print the CUDA lib folders (build time);
    ``check``: exit 1 with the reason when no GPU can be used."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["ld-conf"]:
        for folder in cuda_library_dirs():
            print(folder)
        return 0
    if args == ["check"]:
        import os

        problem = gpu_problem(os.environ)
        print(problem or "GPU available", file=sys.stderr if problem else sys.stdout)
        return 1 if problem else 0
    print("usage: python3 -m shipyard.build.gpu ld-conf|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
