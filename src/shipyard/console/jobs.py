"""Jobs: the one list of every job kind, and a job's page (Describe's fields, the secondary
status timeline, the log, metric charts, hyperparameters, inputs and outputs, Stop, links to
what it came from and what came of it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from shipyard import kinds
from shipyard.console import artifacts, logs, tuning
from shipyard.console.context import PageContext
from shipyard.console.http import Response, json_response, redirect
from shipyard.console.listing import (
    JOB_KINDS,
    SORTS,
    STATUSES,
    JobQuery,
    decode_cursor,
    encode_cursor,
)
from shipyard.control.state.records import TERMINAL_STATUSES
from shipyard.errors import ResourceNotFound

__all__ = ["download", "files", "listing", "log", "metrics", "page", "stop"]

#: Record members whose values name data: shown as the job's inputs and outputs.
_LOCATION_KEYS = frozenset({"S3Uri", "S3OutputPath", "S3ModelArtifacts", "LocalPath",
                            "ModelDataUrl", "S3DataSource"})
#: Points a chart gets per series (a long job's series are thinned to this).
MAX_CHART_POINTS = 2000
_BIG_MEMBERS = frozenset({"SecondaryStatusTransitions", "HyperParameters", "Environment",
                          "FinalMetricDataList", "MetricDefinitions"})


def _spec(ctx: PageContext) -> kinds.Kind:
    kind = ctx.request.params["kind"]
    for spec in JOB_KINDS:
        if spec.key == kind:
            return spec
    raise ResourceNotFound(f"No job kind {kind!r} (one of: "
                           f"{', '.join(k.key for k in JOB_KINDS)})")


def _describe(ctx: PageContext, spec: kinds.Kind, name: str) -> dict[str, Any]:
    record = ctx.plane.lookup(spec.key, name)
    if record is None:
        raise ResourceNotFound(f"No {spec.label} named {name}")
    return record


# -- the list ---------------------------------------------------------------------------------
def listing(ctx: PageContext) -> Response:
    params = ctx.request.query
    query = JobQuery.from_params(params)
    result = ctx.lister.page(query, decode_cursor(params.get("at", "")))
    kept = {k: v for k, v in params.items() if k not in ("at", "fragment") and v}

    def link(**changes: str | None) -> str:
        values = {**kept, **changes}
        return "?" + urlencode({k: v for k, v in values.items() if v})

    def sort_link(sort: str) -> str:
        order = "asc" if query.sort == sort and query.descending else "desc"
        return link(sort=sort, order=order, at=None)

    template = "_job_rows.html" if ctx.request.wants_fragment else "jobs.html"
    return ctx.render(
        template, page=result, query=query, kinds=JOB_KINDS, statuses=STATUSES,
        sorts=list(SORTS), params=params, sort_link=sort_link,
        next_link=link(at=encode_cursor(result.next_cursor) or "0")
        if result.next_cursor is not None else "",
        prev_link=link(at=encode_cursor(result.prev_cursor) or None)
        if result.prev_cursor is not None else "",
        first_link=link(at=None) if result.start else "",
        poll_link=link(fragment="1", at=encode_cursor(result.cursor) or None))


# -- one job ----------------------------------------------------------------------------------
def page(ctx: PageContext) -> Response:
    spec = _spec(ctx)
    name = ctx.request.params["name"]
    record = _describe(ctx, spec, name)
    status = str(record.get(spec.status_field, ""))
    final = status in TERMINAL_STATUSES
    values: dict[str, Any] = dict(
        spec=spec, name=name, record=record, status=status, final=final,
        fields=_fields(record), timeline=record.get("SecondaryStatusTransitions", []),
        hyperparameters=record.get("HyperParameters") or {},
        environment=record.get("Environment") or {}, locations=_locations(record),
        links=_links(ctx, spec, record), outputs=[
            (o, artifacts.link(ctx.request.prefix, spec, name, o))
            for o in artifacts.outputs(spec, record)])
    if ctx.request.wants_fragment:
        response = ctx.render("_job_status.html", **values)
        if final:
            # The page's poller stops asking once the job has ended.
            response.headers.append(("x-console-final", "1"))
        return response
    if spec is kinds.TUNING:
        values["board"] = tuning.leaderboard(ctx, name, record)
    else:
        hosts = ctx.plane.log_hosts(spec.key, name)
        host = ctx.request.query.get("host") or (hosts[0] if hosts else "")
        before = ctx.request.query.get("before", "")
        window = None
        if host in hosts:
            found = ctx.plane.host_log(spec.key, name, host)
            if found is not None:
                window = logs.before(found, int(before) if before.isdigit() else None)
        values.update(hosts=hosts, host=host, window=window,
                      series=_series(ctx, spec, name))
    return ctx.render("job.html", **values)


def log(ctx: PageContext) -> Response:
    """Lines after ``after`` as JSON (the page follows the log with these)."""
    spec = _spec(ctx)
    name = ctx.request.params["name"]
    record = _describe(ctx, spec, name)
    hosts = ctx.plane.log_hosts(spec.key, name)
    host = ctx.request.query.get("host") or (hosts[0] if hosts else "")
    after = ctx.request.query.get("after", "0")
    found = ctx.plane.host_log(spec.key, name, host)
    final = record.get(spec.status_field) in TERMINAL_STATUSES
    if found is None:
        return json_response({"lines": [], "next": 0, "final": final})
    window = logs.after(found, int(after) if after.isdigit() else 0)
    return json_response({"lines": window.lines, "next": window.end,
                          "final": final and window.end >= window.size})


def metrics(ctx: PageContext) -> Response:
    spec = _spec(ctx)
    name = ctx.request.params["name"]
    record = _describe(ctx, spec, name)
    return json_response({"series": _series(ctx, spec, name),
                          "final": record.get(spec.status_field) in TERMINAL_STATUSES})


def files(ctx: PageContext) -> Response:
    spec = _spec(ctx)
    name = ctx.request.params["name"]
    return artifacts.files(ctx, spec, name, _describe(ctx, spec, name))


def download(ctx: PageContext) -> Response:
    spec = _spec(ctx)
    name = ctx.request.params["name"]
    return artifacts.download(ctx, spec, name, _describe(ctx, spec, name))


def stop(ctx: PageContext) -> Response:
    spec = _spec(ctx)
    name = ctx.request.params["name"]
    record = _describe(ctx, spec, name)
    if record.get(spec.status_field) not in TERMINAL_STATUSES:
        ctx.plane.stop(spec.key, name)
    target = ctx.request.url(f"/jobs/{spec.key}/{name}")
    if ctx.request.wants_fragment:
        ctx.request.query["fragment"] = "1"
        return page(ctx)
    return redirect(target)


# -- pieces -------------------------------------------------------------------------------------
def _series(ctx: PageContext, spec: kinds.Kind, name: str) -> dict[str, dict[str, list[Any]]]:
    """Each metric's points (time, value), for uPlot; hosts merged in time order."""
    if spec is not kinds.TRAINING:
        return {}
    found: dict[str, dict[str, list[Any]]] = {}
    for point in ctx.plane.metric_series(spec.key, name):
        series = found.setdefault(point["MetricName"], {"x": [], "y": []})
        series["x"].append(point["Timestamp"])
        series["y"].append(point["Value"])
    for series in found.values():
        if len(series["x"]) > MAX_CHART_POINTS:
            # A chart is a few hundred pixels wide: every n-th point, and the last one.
            step = -(-len(series["x"]) // MAX_CHART_POINTS)
            for axis in ("x", "y"):
                series[axis] = series[axis][::step] + series[axis][-1:]
    return found


def _fields(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """Describe's members, scalars first, then structures (shown as JSON)."""
    scalars = [(k, v) for k, v in record.items() if not isinstance(v, (dict, list))]
    nested = [(k, v) for k, v in record.items()
              if isinstance(v, (dict, list)) and k not in _BIG_MEMBERS]
    return scalars + nested


def _locations(record: dict[str, Any]) -> list[tuple[str, str]]:
    """Every data location the record names: ``(where in the record, URI)``."""
    found: list[tuple[str, str]] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in _LOCATION_KEYS and isinstance(item, str):
                    found.append((f"{path}.{key}".lstrip("."), item))
                else:
                    walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                label = item.get("ChannelName") or item.get("InputName") or item.get(
                    "OutputName") if isinstance(item, dict) else None
                walk(item, f"{path}[{label or index}]")

    walk(record, "")
    return found


def _links(ctx: PageContext, spec: kinds.Kind, record: dict[str, Any]
           ) -> list[tuple[str, str, str]]:
    """``(relation, label, console path)`` to the resources a job came from and led to."""
    links: list[tuple[str, str, str]] = []
    parent = record.get("TuningJobArn")
    if isinstance(parent, str):
        tuning_name = parent.rsplit("/", 1)[-1]
        found = _name_by_arn(ctx, kinds.TUNING, parent) or tuning_name
        links.append(("tuning job", found, f"/jobs/tuning/{found}"))
    model_name = record.get("ModelName")
    if isinstance(model_name, str):
        links.append(("model", model_name, f"/models/{model_name}"))
    best = record.get("BestTrainingJob")
    if isinstance(best, dict) and best.get("TrainingJobName"):
        best_name = str(best["TrainingJobName"])
        links.append(("best trial", best_name, f"/jobs/training/{best_name}"))
    artifacts = (record.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if spec is kinds.TRAINING and isinstance(artifacts, str):
        links += _downstream(ctx, str(record.get("TrainingJobArn", "")), artifacts)
    return links


def _name_by_arn(ctx: PageContext, spec: kinds.Kind, arn: str) -> str | None:
    """ARNs hold lower-cased names: the stored name, from the lower-cased one."""
    lowered = arn.rsplit("/", 1)[-1]
    for record in ctx.plane.list_resources(spec.key, name_contains=None, limit=1000):
        name = str(record.get(spec.name_field, ""))
        if name.lower() == lowered:
            return name
    return None


def _downstream(ctx: PageContext, job_arn: str, artifacts: str
                ) -> list[tuple[str, str, str]]:
    """Models made from a training job's artifacts, endpoints serving them, and the model
    packages registered from it."""
    links: list[tuple[str, str, str]] = []
    models = set()
    for model in ctx.plane.list_resources(kinds.MODEL.key, limit=1000):
        containers = [model.get("PrimaryContainer") or {}, *(model.get("Containers") or [])]
        if any(c.get("ModelDataUrl") == artifacts for c in containers):
            models.add(str(model["ModelName"]))
            links.append(("model", str(model["ModelName"]), f"/models/{model['ModelName']}"))
    if models:
        configs = set()
        for config in ctx.plane.list_resources(kinds.ENDPOINT_CONFIG.key, limit=1000):
            if any(v.get("ModelName") in models for v in config.get("ProductionVariants", [])):
                configs.add(config["EndpointConfigName"])
        for endpoint in ctx.plane.list_resources(kinds.ENDPOINT.key, limit=1000):
            if endpoint.get("EndpointConfigName") in configs:
                name = str(endpoint["EndpointName"])
                links.append(("endpoint", name, f"/endpoints/{name}"))
    for package in ctx.plane.list_resources(kinds.MODEL_PACKAGE.key,
                                            package_type="Both"):
        if package.get("SourceTrainingJobArn") == job_arn:
            group = package.get("ModelPackageGroupName")
            if group:
                links.append(("model package", f"{group} v{package.get('ModelPackageVersion')}",
                              f"/registry/{group}"))
    return links
