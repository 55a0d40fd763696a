"""Endpoints: the list, an endpoint's page (variants, weights, each instance with its health,
invocation and latency charts from the CloudWatch metrics the router records, a "try it"
form, the update history), and a model's page (what it serves, and where)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from shipyard import kinds
from shipyard.console.context import PageContext
from shipyard.console.http import Response, json_response
from shipyard.contract.labels import JOB_KIND_LABEL, JOB_NAME_LABEL, VARIANT_LABEL
from shipyard.control.endpoints.invocation import InvokeRequest
from shipyard.errors import ResourceNotFound, ShipyardError, ValidationError
from shipyard.runtimes.base import ContainerState

__all__ = ["InstanceRow", "instances", "invoke", "listing", "metrics", "model", "page"]

#: The charts' window and resolution.
WINDOW_SECONDS = 3600
PERIOD_SECONDS = 60
#: What the charts show: (metric, statistic, label).
CHARTS = (("Invocations", "Sum", "invocations / min"),
          ("ModelLatency", "Average", "model latency (us, mean)"),
          ("Invocation5XXErrors", "Sum", "5xx errors / min"))
CONTENT_TYPES = ("application/json", "text/csv", "text/plain", "application/x-npy")
MAX_SHOWN_ANSWER = 64 * 1024


def listing(ctx: PageContext) -> Response:
    endpoints = ctx.plane.list_resources(kinds.ENDPOINT.key, limit=1000)
    return ctx.render("endpoints.html", endpoints=endpoints)


def _endpoint(ctx: PageContext, name: str) -> dict[str, Any]:
    record = ctx.plane.lookup(kinds.ENDPOINT.key, name)
    if record is None:
        raise ResourceNotFound(f"No endpoint named {name}")
    return record


def _page_values(ctx: PageContext, name: str) -> dict[str, Any]:
    record = _endpoint(ctx, name)
    config = ctx.plane.lookup(kinds.ENDPOINT_CONFIG.key, str(record.get(
        "EndpointConfigName", ""))) or {}
    models = {str(v.get("VariantName")): v.get("ModelName")
              for v in config.get("ProductionVariants", [])}
    charts = [(metric, label, _series(ctx, record, metric, statistic))
              for metric, statistic, label in CHARTS]
    return dict(name=name, record=record, config=config, models=models,
                instances=instances(ctx, name, record), history=ctx.plane.endpoints.history(name),
                charts=charts, content_types=CONTENT_TYPES,
                status=str(record.get("EndpointStatus", "")))


@dataclass(frozen=True)
class InstanceRow:
    """One container of an endpoint, as the runtime and the routing table see it now."""

    variant: str
    container: str
    #: "running", "exited with code 1", "waiting: <why>", "gone".
    state: str
    #: How the state reads: ok, bad, warning, muted.
    tone: str
    #: The cluster node it runs on, where the runtime says one.
    node: str
    #: In the routing table: it passed its health check and was not found dead since.
    routed: bool


def instances(ctx: PageContext, name: str, record: dict[str, Any]) -> list[InstanceRow]:
    """Each variant's containers: those the routing table sends traffic to, then any other
    the runtime has for it (a fleet starting or retiring, one that exited and is being
    replaced)."""
    routed = ctx.plane.endpoints.routed(name)
    runtime = ctx.plane.ctx.runtime
    rows = []
    for variant in record.get("ProductionVariants") or []:
        variant_name = str(variant.get("VariantName", ""))
        serving = routed.get(variant_name, [])
        try:
            listed = runtime.list({JOB_KIND_LABEL: kinds.ENDPOINT.key, JOB_NAME_LABEL: name,
                                   VARIANT_LABEL: variant_name})
        except ShipyardError:
            listed = []
        for container in [*serving, *sorted(c for c in listed if c not in serving)]:
            try:
                found = runtime.inspect(container)
            except ShipyardError as exc:
                rows.append(InstanceRow(variant_name, container, f"unknown: {exc.message}",
                                        "muted", "", container in serving))
                continue
            state, tone = _state(found)
            rows.append(InstanceRow(variant_name, container, state, tone,
                                    found.node if found is not None else "",
                                    container in serving))
    return rows


def _state(found: ContainerState | None) -> tuple[str, str]:
    if found is None:
        return "gone", "muted"
    if found.waiting:
        return f"waiting: {found.waiting}", "warning"
    if found.running:
        return "running", "ok"
    said = f"exited with code {found.exit_code}"
    if found.oom_killed:
        said += " (out of memory)"
    if found.error:
        said += f": {found.error}"
    return said, "bad"


def page(ctx: PageContext) -> Response:
    values = _page_values(ctx, ctx.request.params["name"])
    return ctx.render("endpoint.html", answer=None, payload="", content_type=CONTENT_TYPES[0],
                      **values)


def metrics(ctx: PageContext) -> Response:
    """One chart's series (``?metric=``), for the page to redraw it."""
    record = _endpoint(ctx, ctx.request.params["name"])
    asked = ctx.request.query.get("metric", "")
    for metric, statistic, _ in CHARTS:
        if metric == asked:
            return json_response({"series": _series(ctx, record, metric, statistic),
                                  "final": False})
    raise ValidationError(f"metric must be one of {', '.join(c[0] for c in CHARTS)}")


def _series(ctx: PageContext, record: dict[str, Any], metric: str, statistic: str
            ) -> dict[str, dict[str, list[Any]]]:
    """One metric's points per variant over the last hour, a point a minute."""
    end = time.time()
    found: dict[str, dict[str, list[Any]]] = {}
    for variant in record.get("ProductionVariants", []):
        dimensions = [{"Name": "EndpointName", "Value": record["EndpointName"]},
                      {"Name": "VariantName", "Value": variant["VariantName"]}]
        answer = ctx.plane.get_metric_statistics({
            "Namespace": "AWS/SageMaker", "MetricName": metric,
            "Dimensions": dimensions, "StartTime": end - WINDOW_SECONDS,
            "EndTime": end + PERIOD_SECONDS, "Period": PERIOD_SECONDS,
            "Statistics": [statistic]})
        points = sorted(answer.get("Datapoints", []), key=lambda p: _epoch(p["Timestamp"]))
        series = found.setdefault(str(variant["VariantName"]), {"x": [], "y": []})
        for point in points:
            series["x"].append(_epoch(point["Timestamp"]))
            series["y"].append(point[statistic])
    return found


def _epoch(value: Any) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return float(value.timestamp())


async def invoke(ctx: PageContext) -> Response:
    """The "try it" form: InvokeEndpoint with the payload, the answer shown as text."""
    name = ctx.request.params["name"]
    payload = ctx.request.form.get("payload", "")
    content_type = ctx.request.form.get("content_type") or CONTENT_TYPES[0]
    started = time.perf_counter()
    answer: dict[str, Any]
    try:
        result = await ctx.plane.invoke(InvokeRequest(
            endpoint=name, body=payload.encode(), content_type=content_type,
            accept=ctx.request.form.get("accept") or None))
        body = result.body[:MAX_SHOWN_ANSWER].decode("utf-8", "replace")
        answer = {"ok": True, "body": body, "content_type": result.content_type,
                  "variant": result.variant, "truncated": len(result.body) > MAX_SHOWN_ANSWER}
    except ShipyardError as exc:
        answer = {"ok": False, "error": exc.code, "body": exc.message}
    answer["millis"] = round((time.perf_counter() - started) * 1000, 1)
    if ctx.request.wants_fragment:
        return ctx.render("_invoke_answer.html", answer=answer)
    values = await asyncio.to_thread(_page_values, ctx, name)
    return ctx.render("endpoint.html", answer=answer, payload=payload,
                      content_type=content_type, **values)


def model(ctx: PageContext) -> Response:
    """A SageMaker model: its containers, and the endpoints whose configurations use it."""
    name = ctx.request.params["name"]
    record = ctx.plane.lookup(kinds.MODEL.key, name)
    if record is None:
        raise ResourceNotFound(f"No model named {name}")
    configs = {str(c["EndpointConfigName"]) for c in
               ctx.plane.list_resources(kinds.ENDPOINT_CONFIG.key, limit=1000)
               if any(v.get("ModelName") == name for v in c.get("ProductionVariants", []))}
    endpoints = [e for e in ctx.plane.list_resources(kinds.ENDPOINT.key, limit=1000)
                 if e.get("EndpointConfigName") in configs]
    jobs = []
    urls = {c.get("ModelDataUrl") for c in [record.get("PrimaryContainer") or {},
                                            *(record.get("Containers") or [])]}
    for job in ctx.plane.list_resources(kinds.TRAINING.key, limit=1000):
        if (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts") in urls:
            jobs.append(str(job["TrainingJobName"]))
    return ctx.render("model.html", name=name, record=record, endpoints=endpoints,
                      configs=sorted(configs), jobs=jobs)
