"""Typed settings, built once at the edge with a recorded source for every value.

Precedence: explicit argument (CLI flag) > ``SHIPYARD_*`` environment > config file
(``<data_dir>/config.json``) > default. ``Settings.sources`` says where each value came from,
so ``shipyard config show`` can explain it. Nothing here runs at import time.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from shipyard.errors import ValidationError
from shipyard.runtimes.base import DEFAULT_PIDS_LIMIT


class Source(str, Enum):
    DEFAULT = "default"
    CONFIG_FILE = "config file"
    ENV = "environment"
    ARGUMENT = "argument"


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def _default_file_roots() -> tuple[Path, ...]:
    # Home and the temporary folder: where `shipyard train --channel ./data` and test
    # fixtures keep data, so the common cases need no configuration.
    return (Path.home(), Path(tempfile.gettempdir()))


@dataclass(frozen=True)
class Settings:
    #: Where state (SQLite), logs, job folders and file:// defaults live.
    data_dir: Path = field(default_factory=lambda: Path.home() / ".shipyard")
    #: ``auto`` (Docker when an engine answers, else process), ``docker``, ``process``,
    #: ``swarm`` (a Docker Swarm cluster) or ``kubernetes`` (docs/runtimes.md).
    runtime: str = "auto"
    #: The swarm manager's engine (``unix://...``, ``tcp://host:2376``); None: the local one.
    swarm_manager: str | None = None
    #: A registry every node pulls from (``host:port``): images are pushed there first.
    swarm_registry: str | None = None
    #: Where the platform pushes to that registry when it reaches it by another address
    #: than the nodes do (``127.0.0.1:5000`` on the machine that runs it); None: the same.
    swarm_registry_push: str | None = None
    #: Node engines the platform may reach, ``hostname=url`` each: images are loaded onto
    #: them when there is no registry, and signals, stats and OOM kills go through them.
    swarm_node_engines: tuple[str, ...] = ()
    #: ``spread``: a job's hosts (an endpoint's instances) on distinct nodes while one has
    #: room; ``pack``: wherever the swarm's scheduler puts them.
    swarm_placement: str = "spread"
    #: Paths mounted alike on every node (an NFS export holding the data directory, say):
    #: the only host paths a swarm container may mount.
    swarm_shared_paths: tuple[Path, ...] = ()
    #: An ``s3://`` prefix of the S3 store that the platform and every node reach: with it,
    #: nodes stage their own ``s3://`` inputs and the platform's folders travel through it
    #: (``runtimes.shipping``); None: only shared paths can be mounted.
    swarm_depot: str | None = None
    #: The image (any with ``python3``) the nodes run that staging in.
    swarm_stager_image: str = "shipyard/base:bookworm-py311"
    #: The kubeconfig of the ``kubernetes`` runtime; None: ``$KUBECONFIG``, ``~/.kube/config``,
    #: or the pod's own service account when Shipyard runs in the cluster.
    kubernetes_kubeconfig: str | None = None
    #: The namespace everything is made in (made when missing, where allowed).
    kubernetes_namespace: str = "shipyard"
    #: Paths every node has alike (``hostPath`` volumes): the only host paths a pod mounts.
    kubernetes_shared_paths: tuple[Path, ...] = ()
    #: ``imagePullPolicy`` of every pod: ``IfNotPresent``, ``Always`` or ``Never``.
    kubernetes_image_pull_policy: str = "IfNotPresent"
    #: Whether the cluster runs a DNS (CoreDNS): hosts find each other through it; without,
    #: each host's pod names the hosts started before it in ``hostAliases``.
    kubernetes_cluster_dns: bool = True
    #: An ``s3://`` prefix of the S3 store the platform and the pods reach: with it, pods
    #: stage their own ``s3://`` inputs and the platform's folders travel through it (as
    #: ``swarm_depot``); None: only shared paths can be mounted.
    kubernetes_depot: str | None = None
    #: The image (any with ``python3``) the pods' stager runs in.
    kubernetes_stager_image: str = "shipyard/base:bookworm-py311"
    #: S3-compatible endpoint for s3:// URIs. None: the store ``shipyard server`` runs
    #: (``embedded_s3``), else AWS's default resolution.
    s3_endpoint_url: str | None = None
    #: Credentials for the S3 endpoint; None = boto3's usual chain (env, ~/.aws, role). The
    #: embedded store takes the API's key pair instead.
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    #: ``shipyard server`` runs an S3 store (SeaweedFS) for its data directory when
    #: ``s3_endpoint_url`` names none (docs/s3.md). Servers started in a thread
    #: (``ApiServer``, tests) run one only when asked.
    embedded_s3: bool = True
    #: The embedded store's loopback port; 0 picks a free one at each server start.
    s3_port: int = 8778
    #: The address the embedded store listens on: the loopback, or one a cluster's nodes
    #: reach (the swarm depot's store).
    s3_host: str = "127.0.0.1"
    region: str = "us-east-1"
    account_id: str = "000000000000"
    #: SIGTERM-to-SIGKILL grace for stops and MaxRuntime (SageMaker: 120 s).
    stop_grace_seconds: float = 120.0
    #: Concurrent S3 transfers per job.
    transfer_workers: int = 8
    #: Remove job containers once their results are collected.
    remove_containers: bool = True
    #: Extra ``org.shipyard.scope`` label on everything this plane creates, so a shared
    #: engine's users (or a test session) can find and clean up exactly their own.
    scope: str | None = None
    #: Where the API server listens (``shipyard server``, and the one the CLI starts).
    api_host: str = "127.0.0.1"
    api_port: int = 8777
    #: How long an endpoint's container may take to pass ``/ping`` when its production variant
    #: does not say (``ContainerStartupHealthCheckTimeoutInSeconds``).
    endpoint_startup_timeout_seconds: float = 600.0
    #: InvokeEndpoint limits: SageMaker's are 6 MB each way and 60 s for the container.
    invoke_max_payload_bytes: int = 6 * 1024 * 1024
    invoke_timeout_seconds: float = 60.0
    #: The host folders that ``file://`` URIs and plain local paths may name (inputs, outputs,
    #: checkpoints, code, model data). The data directory and system folders are refused
    #: whatever this says (``control.confinement``).
    file_roots: tuple[Path, ...] = field(default_factory=_default_file_roots)
    #: InvokeEndpoint answered by a process of its own that outlives the server's restarts
    #: (``shipyard server``; docs/dataplane.md). Off: one process answers everything.
    separate_data_plane: bool = True
    #: A data plane left without a control plane this long stops by itself.
    dataplane_orphan_seconds: float = 600.0
    #: Processes and threads one job or endpoint container may run (docs/security.md).
    container_pids_limit: int = DEFAULT_PIDS_LIMIT
    #: Capabilities beyond the base set that an image may ask for with the label
    #: ``org.shipyard.capabilities`` (docs/security.md); none unless the operator says.
    container_extra_capabilities: tuple[str, ...] = ()
    #: Refuse a GPU instance type where no GPU is available to containers, instead of running
    #: it on CPU with a notice (docs/jobs.md, "Instance types").
    refuse_missing_gpu: bool = False
    #: How long published CloudWatch metrics are kept (their one- and five-minute rollups),
    #: in days; AWS keeps one-minute data 15 days (docs/metrics.md).
    metrics_retention_days: float = 15.0
    #: How long their raw points are kept, in days (never longer than the above): periods
    #: under a minute and percentiles need them.
    metrics_raw_retention_days: float = 3.0
    #: An MLflow tracking server (``http://host:5000``) each ended training job is forwarded
    #: to as a run, each tuning job as a parent run of its trials (docs/metrics.md). None: off.
    mlflow_tracking_uri: str | None = None
    #: Queue work that does not fit what the machine has left (docs/runtimes.md, "Capacity
    #: and queueing"): each job host and endpoint or transform instance reserves its instance
    #: type's memory and CPUs; off, everything starts at once as the engine lets it.
    capacity_queue: bool = True
    #: What the queue shares out, overriding what the runtime reports (the engine's CPUs and
    #: memory). None: the runtime's figure.
    capacity_cpus: float | None = None
    capacity_memory_mb: int | None = None
    #: CPUs are shared in time, memory is not: a host reserves its type's vCPUs divided by
    #: this (an ml.m5.large, 2 vCPUs, reserves 0.5 CPU at 4). Memory is never overcommitted.
    cpu_overcommit: float = 4.0
    sources: Mapping[str, Source] = field(default_factory=dict, compare=False)

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        env = os.environ if environ is None else environ
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        values: dict[str, Any] = {}
        sources: dict[str, Source] = {}
        # Resolved with the same rules as every other setting, since it locates the file.
        data_dir_raw = overrides.get("data_dir", env.get("SHIPYARD_DATA_DIR"))
        try:
            data_dir = cls().data_dir if data_dir_raw is None else _path(data_dir_raw)
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"setting data_dir: {exc}") from exc
        file_values = _read_config_file(data_dir / "config.json")
        if "data_dir" in file_values:
            raise ValidationError(
                f"config file {data_dir / 'config.json'}: data_dir cannot be set in the file "
                "that lives in it (use SHIPYARD_DATA_DIR or --data-dir)"
            )
        for f in fields(cls):
            if f.name == "sources":
                continue
            env_name = "SHIPYARD_" + f.name.upper()
            try:
                if f.name in overrides:
                    values[f.name] = _cast(f.name, overrides[f.name])
                    sources[f.name] = Source.ARGUMENT
                elif env_name in env:
                    values[f.name], sources[f.name] = _cast(f.name, env[env_name]), Source.ENV
                elif f.name in file_values:
                    values[f.name] = _cast(f.name, file_values[f.name])
                    sources[f.name] = Source.CONFIG_FILE
                else:
                    sources[f.name] = Source.DEFAULT
            except (TypeError, ValueError) as exc:
                raise ValidationError(f"setting {f.name}: {exc}") from exc
        if values.get("runtime", "auto") not in {"auto", "docker", "process", "swarm",
                                                 "kubernetes"}:
            raise ValidationError("setting runtime must be one of auto, docker, process, "
                                  "swarm, kubernetes")
        if values.get("swarm_placement", "spread") not in {"spread", "pack"}:
            raise ValidationError("setting swarm_placement must be spread or pack")
        return replace(cls(**values), sources=sources)

    def explain(self) -> dict[str, dict[str, str]]:
        return {
            f.name: {"value": _text(getattr(self, f.name)), "source": self.sources.get(
                f.name, Source.DEFAULT).value}
            for f in fields(self)
            if f.name != "sources"
        }

    def as_overrides(self) -> dict[str, Any]:
        """Every value that is set, in a JSON-able form ``load`` reads back unchanged."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "sources" or value is None:
                continue
            values[f.name] = ([str(p) for p in value] if isinstance(value, tuple)
                              else str(value))
        return values


def _text(value: Any) -> str:
    # The environment's form, so the value shown can be pasted into SHIPYARD_<NAME> (every
    # list setting reads commas).
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _cast(name: str, raw: Any) -> Any:
    kinds: dict[str, Any] = {
        "data_dir": _path,
        "runtime": str,
        "swarm_manager": lambda v: str(v) or None,
        "swarm_registry": lambda v: str(v) or None,
        "swarm_registry_push": lambda v: str(v) or None,
        "swarm_node_engines": _node_engines,
        "swarm_placement": str,
        "swarm_shared_paths": _folders,
        "swarm_depot": lambda v: str(v) or None,
        "swarm_stager_image": str,
        "kubernetes_depot": lambda v: str(v) or None,
        "kubernetes_stager_image": str,
        "kubernetes_kubeconfig": lambda v: str(v) or None,
        "kubernetes_namespace": str,
        "kubernetes_shared_paths": _folders,
        "kubernetes_image_pull_policy": str,
        "kubernetes_cluster_dns": lambda v: v if isinstance(v, bool) else _bool(str(v)),
        "s3_endpoint_url": lambda v: str(v) or None,
        "s3_access_key_id": lambda v: str(v) or None,
        "s3_secret_access_key": lambda v: str(v) or None,
        "embedded_s3": lambda v: v if isinstance(v, bool) else _bool(str(v)),
        "s3_port": _port,
        "s3_host": str,
        "region": str,
        "account_id": str,
        "stop_grace_seconds": _grace_seconds,
        "transfer_workers": _positive_int,
        "remove_containers": lambda v: v if isinstance(v, bool) else _bool(str(v)),
        "scope": lambda v: str(v) or None,
        "api_host": str,
        "api_port": int,
        "endpoint_startup_timeout_seconds": _positive_seconds,
        "invoke_max_payload_bytes": _positive_int,
        "invoke_timeout_seconds": _positive_seconds,
        "file_roots": _folders,
        "separate_data_plane": lambda v: v if isinstance(v, bool) else _bool(str(v)),
        "dataplane_orphan_seconds": _positive_seconds,
        "container_pids_limit": _positive_int,
        "container_extra_capabilities": _capabilities,
        "refuse_missing_gpu": lambda v: v if isinstance(v, bool) else _bool(str(v)),
        "metrics_retention_days": _positive_days,
        "metrics_raw_retention_days": _positive_days,
        "mlflow_tracking_uri": lambda v: str(v) or None,
        "capacity_queue": lambda v: v if isinstance(v, bool) else _bool(str(v)),
        "capacity_cpus": lambda v: None if str(v) == "" else _positive_number(v),
        "capacity_memory_mb": lambda v: None if str(v) == "" else _positive_int(v),
        "cpu_overcommit": _positive_number,
    }
    return kinds[name](raw)


def _path(raw: Any) -> Path:
    if not str(raw):
        raise ValueError("must not be empty")
    # Absolute, because container engines refuse relative bind-mount sources.
    return Path(raw).expanduser().absolute()


def _folders(raw: Any) -> tuple[Path, ...]:
    """A JSON list of paths, or one string of paths separated by os.pathsep or commas.

    An empty list is allowed: it refuses every local location (an S3-only server).
    """
    if isinstance(raw, str):
        items: list[Any] = [p for p in raw.replace(",", os.pathsep).split(os.pathsep)
                            if p.strip()]
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise ValueError(f"must be a list of folders, not {raw!r}")
    folders = []
    for item in items:
        if not isinstance(item, (str, Path)) or not str(item).strip():
            raise ValueError(f"every entry must be a folder path, not {item!r}")
        folder = Path(str(item).strip()).expanduser()
        # A relative root would change meaning with the server's working directory.
        if not folder.is_absolute():
            raise ValueError(f"{item!r} is not an absolute path")
        folders.append(folder)
    return tuple(folders)


def _node_engines(raw: Any) -> tuple[str, ...]:
    """``hostname=url`` entries, a list or one string separated by commas."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"must be a list of hostname=url, not {raw!r}")
    entries = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        hostname, sep, url = text.partition("=")
        if not sep or not hostname.strip() or "://" not in url:
            raise ValueError(f"{item!r} is not hostname=url (e.g. node1=tcp://10.0.0.5:2376)")
        entries.append(f"{hostname.strip()}={url.strip()}")
    return tuple(entries)


def _capabilities(raw: Any) -> tuple[str, ...]:
    """Linux capability names (``SYS_PTRACE`` or ``CAP_SYS_PTRACE``), a list or a string
    separated by commas (or by ``os.pathsep``, the form ``explain`` shows)."""
    items = raw.replace(os.pathsep, ",").split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"must be a list of capability names, not {raw!r}")
    names = []
    for item in items:
        name = str(item).strip().upper().removeprefix("CAP_")
        if not name:
            continue
        if not name.replace("_", "").isalnum() or name == "ALL":
            raise ValueError(f"{item!r} is not a capability name")
        names.append(name)
    return tuple(names)


def _port(raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError(f"not a port number: {raw!r}")
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port from 0 to 65535, not {value}")
    return value


def _positive_int(raw: Any) -> int:
    # int(2.5) would silently drop the fraction of a JSON number.
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise ValueError(f"not a whole number: {raw!r}")
    value = int(raw)
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def _grace_seconds(raw: Any) -> float:
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a finite number of seconds >= 0, not {raw!r}")
    return value


def _positive_seconds(raw: Any) -> float:
    value = _grace_seconds(raw)
    if value == 0:
        raise ValueError("must be more than 0 seconds")
    return value


def _positive_days(raw: Any) -> float:
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a finite number of days > 0, not {raw!r}")
    return value


def _positive_number(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError(f"not a number: {raw!r}")
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a finite number > 0, not {raw!r}")
    return value


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ValidationError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValidationError(f"config file {path} must hold a JSON object")
    return data
