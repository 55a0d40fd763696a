"""The Dockerfile recipe: one image that SageMaker can run as ``train`` and as ``serve``.

Every rule below comes from AWS's container contract ("How Amazon SageMaker Runs Your Training
Image", "Use Your Own Inference Code with Hosting Services"):

- exec-form ``ENTRYPOINT ["shipyard-entry"]`` and no CMD: ``docker run IMAGE train`` and
  ``docker run IMAGE serve`` reach the toolkit directly as PID 1, so SIGTERM reaches it (a
  shell-form entry point or tini in front swallows or confuses it);
- a non-root user (uid/gid 1000) runs everything; the code is owned by root and read-only to it;
- nothing under ``/opt/ml``: SageMaker mounts over it, so anything baked there disappears. The
  code lives in ``/opt/program``; the build fails if the base or the fragment made ``/opt/ml``;
- dependencies are installed at build time from the wheelhouse (``--no-index
  --require-hashes``) into ``/opt/venv``, never at start: a container may have no network;
- labels say what the image can do: AWS's ``com.amazonaws.sagemaker.capabilities.*`` (read by
  SageMaker for multi-model endpoints and the bind-to-port contract) and Shipyard's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import shipyard
from shipyard.build import gpu as gpu_recipe
from shipyard.build.entrypoint import CODE_DIR_ENV, SERVE_PROGRAM_ENV, TRAIN_PROGRAM_ENV
from shipyard.build.project import Project
from shipyard.build.wheelhouse import LOCK_FILE
from shipyard.contract import labels
from shipyard.contract.labels import MANAGED_LABEL
from shipyard.contract.serving import BIND_TO_PORT_LABEL, MULTI_MODEL_LABEL

__all__ = [
    "BIND_TO_PORT_LABEL",
    "CODE_DIR",
    "CONTEXT_CODE",
    "CONTEXT_WHEELS",
    "ENTRYPOINT",
    "MULTI_MODEL_LABEL",
    "RECIPE_LABEL",
    "RECIPE_VERSION",
    "RECIPE_VERSION_LABEL",
    "USER_ID",
    "VENV_DIR",
    "Recipe",
    "render",
]

RECIPE_VERSION = "1"
CODE_DIR = "/opt/program"
WHEELS_DIR = "/tmp/shipyard-wheels"
#: The dependencies and the toolkit live in a virtual environment, first on PATH.
VENV_DIR = "/opt/venv"
DEPENDENCIES_STAGE = "dependencies"
USER_ID = 1000
USER_NAME = "shipyard"
ENTRYPOINT = ("shipyard-entry",)
#: Folders of the build context: the project's files, and the wheels with their lock.
CONTEXT_CODE = "code"
CONTEXT_WHEELS = "wheels"
RECIPE_LABEL = labels.BUILD_RECIPE_LABEL
RECIPE_VERSION_LABEL = labels.BUILD_RECIPE_VERSION_LABEL
TOOLKIT_LABEL = labels.BUILD_TOOLKIT_LABEL
TRAIN_LABEL = labels.BUILD_TRAIN_LABEL
SERVE_LABEL = labels.BUILD_SERVE_LABEL
CUDA_LABEL = labels.BUILD_CUDA_LABEL


@dataclass(frozen=True)
class Recipe:
    """Everything the Dockerfile depends on (and nothing else: it is part of the content hash)."""

    project: Project
    base: str
    python: str = "python3"
    gpu: bool = False
    #: the base already has the CUDA runtime (an nvidia/cuda base): no CUDA wheels, no ld conf
    cuda_in_base: bool = False
    extra_labels: Mapping[str, str] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        project = self.project
        labels = {
            MANAGED_LABEL: "true",
            RECIPE_LABEL: "gpu" if self.gpu else "cpu",
            RECIPE_VERSION_LABEL: RECIPE_VERSION,
            TOOLKIT_LABEL: shipyard.__version__,
            "org.opencontainers.image.title": project.name,
            "org.opencontainers.image.base.name": self.base,
        }
        if project.train_program:
            labels[TRAIN_LABEL] = project.train_program
        if project.serve_program:
            labels[SERVE_LABEL] = project.serve_program
            # The toolkit's server honours SAGEMAKER_BIND_TO_PORT and SAGEMAKER_MULTI_MODEL.
            labels[BIND_TO_PORT_LABEL] = "true"
            if project.multi_model:
                labels[MULTI_MODEL_LABEL] = "true"
        if self.gpu:
            labels[CUDA_LABEL] = str(gpu_recipe.CUDA_MAJOR)
        labels.update(self.extra_labels)
        return labels

    def environment(self) -> dict[str, str]:
        project = self.project
        env = {
            "SAGEMAKER_SUBMIT_DIRECTORY": CODE_DIR,
            CODE_DIR_ENV: CODE_DIR,
            TRAIN_PROGRAM_ENV: project.train_program or "",
            SERVE_PROGRAM_ENV: project.serve_program or "",
        }
        if project.train_program:
            env["SAGEMAKER_PROGRAM"] = project.train_program
        if self.gpu:
            env.update(gpu_recipe.gpu_environment())
        return env


def _pairs(instruction: str, values: Mapping[str, str]) -> str:
    body = " \\\n    ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in values.items())
    return f"{instruction} {body}"


def _final_checks(recipe: Recipe) -> str:
    uid = USER_ID
    steps = [
        # A uid 1000 the base already has (e.g. Ubuntu's `ubuntu`) is reused as it is.
        f"if ! grep -q '^[^:]*:[^:]*:{uid}:' /etc/passwd; then "
        f"echo '{USER_NAME}:x:{uid}:{uid}:{USER_NAME}:/home/{USER_NAME}:/usr/sbin/nologin' "
        f">> /etc/passwd; "
        f"grep -q '^[^:]*:[^:]*:{uid}:' /etc/group || echo '{USER_NAME}:x:{uid}:' >> /etc/group; "
        f"mkdir -p /home/{USER_NAME} && chown {uid}:{uid} /home/{USER_NAME}; fi",
        "if [ -e /opt/ml ]; then echo '/opt/ml is reserved: SageMaker mounts over it, so "
        "nothing may be baked there (remove it from the base image or the fragment)' >&2; "
        "exit 1; fi",
        "command -v shipyard-entry >/dev/null",
    ]
    if recipe.gpu:
        steps.append(gpu_recipe.driver_guard_command())
    return "RUN set -e; \\\n    " + "; \\\n    ".join(steps)


def render(recipe: Recipe) -> str:
    """The Dockerfile, for a context holding ``code/`` and ``wheels/`` (with the lock).

    Two stages: the first installs the wheels into a virtual environment, the second copies
    only that environment, so the wheels themselves never become a layer of the image (with
    CUDA or framework wheels they weigh gigabytes). The environment sees the base's own
    packages (``--system-site-packages``), so a base with a framework preinstalled keeps it.
    """
    project = recipe.project
    recipe_name = "gpu" if recipe.gpu else "cpu"
    venv_python = f"{VENV_DIR}/bin/python3"
    lines = [
        f"# Generated by shipyard build (recipe {RECIPE_VERSION}, {recipe_name}) for "
        f"{project.name}.",
        f"FROM {recipe.base} AS {DEPENDENCIES_STAGE}",
        "USER root",
        f"COPY {CONTEXT_WHEELS} {WHEELS_DIR}",
        # Offline and pinned: the lock lists every wheel with its sha256. The venv has no pip
        # of its own: the base's pip, seen through the system site-packages, installs into it.
        f"RUN {recipe.python} -m venv --without-pip --system-site-packages {VENV_DIR} \\\n"
        f"    && PIP_ROOT_USER_ACTION=ignore {venv_python} -m pip install --no-cache-dir "
        "--disable-pip-version-check \\\n"
        f"       --no-index --find-links {WHEELS_DIR} --require-hashes "
        f"-r {WHEELS_DIR}/{LOCK_FILE}",
        "",
        f"FROM {recipe.base}",
        "USER root",
        f"COPY --from={DEPENDENCIES_STAGE} {VENV_DIR} {VENV_DIR}",
        f"ENV PATH={VENV_DIR}/bin:$PATH",
    ]
    if recipe.gpu and not recipe.cuda_in_base:
        lines.append(
            f"RUN python3 -m shipyard.build.gpu ld-conf > {gpu_recipe.LD_CONF_FILE} "
            f"\\\n    && test -s {gpu_recipe.LD_CONF_FILE} && ldconfig")
    if project.fragment.strip():
        lines += ["# --- project Dockerfile fragment (runs as root) ---",
                  project.fragment.strip(),
                  "# --- end of fragment ---"]
    lines += [
        f"COPY {CONTEXT_CODE} {CODE_DIR}",
        _pairs("ENV", recipe.environment()),
        _final_checks(recipe),
        _pairs("LABEL", recipe.labels()),
        f"WORKDIR {CODE_DIR}",
        f"USER {USER_ID}:{USER_ID}",
        f"ENTRYPOINT {json.dumps(list(ENTRYPOINT))}",
    ]
    return "\n".join(lines) + "\n"
