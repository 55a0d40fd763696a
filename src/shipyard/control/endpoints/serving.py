"""Serving containers: a model's files on the host, ``serve`` containers over them, their health.

Endpoints and transform jobs both run a model the same way: the model's ``ModelDataUrl``
(s3://, file:// or a path; a ``.tar.gz`` is extracted safely, a folder is used as it is) becomes
a host folder mounted read-only at ``/opt/ml/model``; a container runs ``serve`` with the model's
environment and its port 8080 published on 127.0.0.1; it is ready once ``GET /ping`` answers
200. A container that exits first, or that never passes, gets a reason a user can act on.
"""

from __future__ import annotations

import http.client
import logging
import shutil
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipyard.contract.labels import (
    HOST_LABEL,
    JOB_KIND_LABEL,
    JOB_NAME_LABEL,
    MANAGED_LABEL,
    RUN_LABEL,
    VARIANT_LABEL,
)
from shipyard.contract.paths import OptMl
from shipyard.contract.serving import (
    MULTI_MODEL_ENV,
    MULTI_MODEL_ROOT,
    PING_PATH,
    SERVE_COMMAND,
    SERVING_PORT,
)
from shipyard.control.context import Context
from shipyard.control.limits import limits_for
from shipyard.control.unpack import safe_extract
from shipyard.errors import ShipyardError, ValidationError
from shipyard.runtimes.base import ContainerSpec, Mount

#: Label of the deployment (one endpoint config rolled out once) a container belongs to.
log = logging.getLogger(__name__)

DEPLOYMENT_LABEL = RUN_LABEL
CONTAINER_MODEL_DIR = str(OptMl().model_dir)
#: Log lines kept in a startup failure's reason.
_REASON_LOG_LINES = 5


class StartupFailed(ShipyardError):
    """A serving container did not become ready; the message is the user-facing reason."""


@dataclass(frozen=True)
class VariantSpec:
    """Everything needed to (re)start a variant's instances, without the model record."""

    name: str
    image: str
    instance_type: str
    count: int
    weight: float
    env: dict[str, str] = field(default_factory=dict)
    model_name: str = ""
    model_data_url: str | None = None
    multi_model: bool = False
    startup_timeout: float = 600.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VariantSpec:
        return cls(**data)


@dataclass(frozen=True)
class Instance:
    container: str
    variant: str
    port: int
    #: Log stream of this instance, as SageMaker names them: ``<variant>/<instance id>``.
    log_stream: str
    #: Where ``port`` is: the published port on loopback, or (see ``direct_route``) the
    #: container's own address.
    host: str = "127.0.0.1"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def primary_container(model: dict[str, Any]) -> dict[str, Any]:
    """The container an inference runs: ``PrimaryContainer``, else the first of ``Containers``."""
    container = model.get("PrimaryContainer") or (model.get("Containers") or [None])[0]
    if not container:
        raise ValidationError(f"Model {model.get('ModelName')} has no container")
    return dict(container)


def variant_spec(variant: dict[str, Any], model: dict[str, Any], default_timeout: float
                 ) -> VariantSpec:
    container = primary_container(model)
    multi = container.get("Mode") == "MultiModel"
    env = dict(container.get("Environment") or {})
    if multi:
        env[MULTI_MODEL_ENV] = "true"
    return VariantSpec(
        name=variant["VariantName"], image=container["Image"],
        instance_type=variant.get("InstanceType") or "local",
        count=int(variant.get("InitialInstanceCount") or 1),
        weight=float(variant.get("InitialVariantWeight", 1.0)),
        env=env, model_name=str(model.get("ModelName", "")),
        model_data_url=container.get("ModelDataUrl"), multi_model=multi,
        startup_timeout=float(variant.get("ContainerStartupHealthCheckTimeoutInSeconds")
                              or default_timeout),
    )


def prepare_model_dir(ctx: Context, url: str | None, dest: Path) -> Path:
    """The host folder to mount at ``/opt/ml/model``: ``url``'s archive extracted into
    ``dest``, or ``url`` itself when it is a local folder. Raises ``StartupFailed``."""
    dest.mkdir(parents=True, exist_ok=True)
    if not url:
        return dest
    try:
        if url.startswith("s3://"):
            archive = ctx.s3.download_file(url, dest.parent / f"{dest.name}.tar.gz")
        else:
            try:
                archive = ctx.file_roots.path(url, "ModelDataUrl")
            except ValidationError as exc:
                raise StartupFailed(exc.message) from exc
            if archive.is_dir():
                return archive
            if not archive.is_file():
                raise StartupFailed(f"Could not find model data at {url}.")
        safe_extract(archive, dest)
        if url.startswith("s3://"):
            archive.unlink(missing_ok=True)  # our download, extracted: not kept twice
    except StartupFailed:
        raise
    except ShipyardError as exc:
        raise StartupFailed(f"Failed to extract model data archive from URL {url}: "
                            f"{exc.message}") from exc
    return dest


def start_instance(ctx: Context, *, owner_kind: str, owner_name: str, deployment: str,
                   spec: VariantSpec, model_dir: Path, workdir: Path,
                   extra_env: dict[str, str] | None = None) -> Instance:
    """Start one ``serve`` container for ``spec``; returns once the engine knows its port."""
    instance_id = uuid.uuid4().hex[:8]
    name = f"shipyard-{owner_kind}-{owner_name}-{deployment}-{spec.name}-{instance_id}"
    root = workdir / instance_id
    (root / "model").mkdir(parents=True, exist_ok=True)
    mounts = [Mount(str(model_dir), CONTAINER_MODEL_DIR, read_only=True)]
    if spec.multi_model:
        models = workdir / "models"
        models.mkdir(parents=True, exist_ok=True)
        mounts.append(Mount(str(models), MULTI_MODEL_ROOT, read_only=True))
    limits = limits_for(ctx, spec.instance_type, f"{owner_kind} {owner_name}")
    labels = {MANAGED_LABEL: "true", JOB_KIND_LABEL: owner_kind, JOB_NAME_LABEL: owner_name,
              DEPLOYMENT_LABEL: deployment, VARIANT_LABEL: spec.name, HOST_LABEL: instance_id}
    network = owner_network(ctx, owner_kind, owner_name)
    ctx.runtime.start(ContainerSpec(
        name=name, image=spec.image, command=[SERVE_COMMAND],
        env={**spec.env, **(extra_env or {})}, mounts=mounts, labels=labels, network=network,
        cpus=limits.cpus, memory_bytes=limits.memory_bytes, gpus=limits.gpus,
        root_dir=str(root), ports={SERVING_PORT: 0},
        group=f"shipyard-{owner_kind}-{owner_name}-{deployment}-{spec.name}",
    ))
    host, port = _published_address(ctx, name)
    return Instance(name, spec.name, port, f"{spec.name}/{instance_id}", host=host)


def owner_network(ctx: Context, owner_kind: str, owner_name: str) -> str:
    """The network of one endpoint's (or transform job's) containers, made on first use:
    each on its own, so no job or other endpoint reaches them except through the platform,
    which signs and meters every call."""
    network = f"shipyard-{owner_kind}-{owner_name}"
    ctx.runtime.create_network(network, {MANAGED_LABEL: "true", JOB_KIND_LABEL: owner_kind,
                                         JOB_NAME_LABEL: owner_name})
    return network


def remove_owner_network(ctx: Context, owner_kind: str, owner_name: str) -> None:
    """Once the owner's last container is gone; a failure is logged, never raised."""
    try:
        ctx.runtime.remove_network(f"shipyard-{owner_kind}-{owner_name}")
    except ShipyardError as exc:
        log.warning("could not remove the network of %s %s: %s", owner_kind, owner_name, exc)


def _published_address(ctx: Context, name: str) -> tuple[str, int]:
    """Where the container's serving port answers: loopback on one engine, its node's
    address in a cluster. Port 0 when it never got one (it exited: the health check then
    reports the container's own failure). A container still waiting to be placed (a cluster
    scheduler's queue, an image on its way to the node) is waited for, up to the startup
    health check's own limit."""
    placed_by = time.monotonic() + ctx.settings.endpoint_startup_timeout_seconds
    deadline = time.monotonic() + 10
    while True:
        state = ctx.runtime.inspect(name)
        if state is not None and state.ports.get(SERVING_PORT):
            return state.published_host, state.ports[SERVING_PORT]
        now = time.monotonic()
        if state is not None and state.waiting and now < placed_by:
            deadline = now + 10
        elif state is None or not state.running or now > deadline:
            return "127.0.0.1", 0
        time.sleep(0.01 if not (state and state.waiting) else 0.2)


def ping(port: int, timeout: float = 2.0, host: str = "127.0.0.1") -> int | None:
    """``GET /ping``'s status, or ``None`` when nothing answers."""
    if not port:
        return None
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", PING_PATH)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def direct_route(ctx: Context, instance: Instance) -> Instance:
    """The instance reached at its own address when the host can route there (a Linux
    engine's bridge): that skips the engine's port proxy, about 0.1 ms per request
    (``benchmarks/endpoints.py``). Where it cannot (Docker Desktop, the process runtime), the
    published port stays."""
    state = ctx.runtime.inspect(instance.container)
    if state is None or not state.address:
        return instance
    if ping(SERVING_PORT, timeout=0.5, host=state.address) != 200:
        return instance
    return Instance(instance.container, instance.variant, SERVING_PORT, instance.log_stream,
                    host=state.address)


def wait_healthy(ctx: Context, instances: list[Instance], timeout: float,
                 cancelled: threading.Event | None = None) -> None:
    """Block until every instance answers ``/ping`` with 200; ``StartupFailed`` otherwise."""
    deadline = time.monotonic() + timeout
    pending = list(instances)
    delay = 0.01
    while pending:
        for instance in list(pending):
            if ping(instance.port, timeout=1.0, host=instance.host) == 200:
                pending.remove(instance)
                continue
            state = ctx.runtime.inspect(instance.container)
            if state is None or not state.running:
                code = state.exit_code if state is not None else None
                raise StartupFailed(
                    f"The primary container for production variant {instance.variant} exited "
                    f"(exit code {code}) before it passed the ping health check."
                    + _log_tail(ctx, instance))
        if not pending:
            return
        if cancelled is not None and cancelled.is_set():
            raise StartupFailed("The deployment was cancelled.")
        if time.monotonic() > deadline:
            instance = pending[0]
            raise StartupFailed(
                f"The primary container for production variant {instance.variant} did not pass "
                f"the ping health check within {timeout:g} seconds." + _log_tail(ctx, instance))
        # Fast at first (a toolkit server is ready in ~0.1 s), then easing off.
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _log_tail(ctx: Context, instance: Instance) -> str:
    try:
        lines = [line.text for line in ctx.runtime.logs(instance.container)][-_REASON_LOG_LINES:]
    except ShipyardError:
        return ""
    return (" Last log lines: " + " | ".join(lines)) if lines else ""


def stop_instance(ctx: Context, container: str, grace: float) -> None:
    """SIGTERM, SIGKILL after ``grace`` seconds (SageMaker's 30 s for hosting), remove."""
    try:
        ctx.runtime.signal(container, signal.SIGTERM)
        if ctx.runtime.wait(container, grace) is None:
            ctx.runtime.signal(container, signal.SIGKILL)
            ctx.runtime.wait(container, 10)
    except ShipyardError:
        pass
    try:
        ctx.runtime.remove(container)
    except ShipyardError:
        pass


def follow_logs(ctx: Context, kind: str, name: str, instance: Instance) -> threading.Thread:
    """Copy an instance's output into the log store (its CloudWatch-style stream) until it
    exits; a restarted plane resumes after the last line it kept."""
    def run() -> None:
        since = ctx.logs.last_timestamp_ns(kind, name, instance.log_stream)
        try:
            with ctx.logs.open_append(kind, name, instance.log_stream) as out:
                for line in ctx.runtime.logs(instance.container, since_ns=since, follow=True):
                    out.write(line)
        except ShipyardError:
            pass

    thread = threading.Thread(target=run, name=f"logs-{instance.container}", daemon=True)
    thread.start()
    return thread


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
