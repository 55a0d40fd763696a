"""``shipyard endpoints ls | describe | delete | metrics``, and what ``deploy`` and ``invoke``
share with them: waiting on an endpoint's status, finding what ``shipyard deploy`` created for
it, and the "not found" answers of both APIs turned into the NOT_FOUND exit code."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shlex
import time
from collections.abc import Iterator, Sequence
from typing import Any

import click

from shipyard.cli import charts
from shipyard.cli.errors import CliError, ExitCode
from shipyard.cli.output import as_datetime, open_client, queue_wait
from shipyard.client import Client
from shipyard.errors import InvokeValidationError, ShipyardError, ValidationError
from shipyard.settings import Settings, Source

#: Tags ``shipyard deploy`` puts on the models and endpoint configs it creates, so that
#: ``endpoints delete`` removes those (and only those) with their endpoint.
CREATED_BY_TAG = "shipyard:created-by"
CREATED_BY_DEPLOY = "shipyard deploy"
ENDPOINT_TAG = "shipyard:endpoint"
#: Statuses an endpoint leaves by itself.
TRANSITIONAL = ("Creating", "Updating", "Deleting", "SystemUpdating", "RollingBack")
STATUSES = ["OutOfService", "Creating", "Updating", "SystemUpdating", "RollingBack",
            "InService", "Deleting", "Failed"]
POLL_SECONDS = 0.5
#: Global options worth repeating in a printed command line (they pick the server).
_ECHOED_SETTINGS = ("data_dir", "api_port")


def _is_not_found(exc: ShipyardError) -> bool:
    # SageMaker: 'Could not find endpoint "arn..."' (ValidationException); sagemaker-runtime:
    # 'Endpoint NAME of account ACCT not found.' (ValidationError). Both codes also carry
    # ordinary bad-input errors, so the message decides.
    text = str(exc)
    return text.startswith("Could not find") or text.endswith("not found.")


@contextlib.contextmanager
def not_found_exits() -> Iterator[None]:
    """A missing endpoint, config or model exits NOT_FOUND; other bad input exits USAGE."""
    try:
        yield
    except (ValidationError, InvokeValidationError) as exc:
        code = ExitCode.NOT_FOUND if _is_not_found(exc) else ExitCode.USAGE
        raise CliError(str(exc), code) from exc


def find_endpoint(client: Client, name: str) -> dict[str, Any] | None:
    """The DescribeEndpoint record of ``name``, or None when there is none."""
    try:
        return client.call("DescribeEndpoint", EndpointName=name)
    except ValidationError as exc:
        if _is_not_found(exc):
            return None
        raise


def describe_endpoint(client: Client, name: str) -> dict[str, Any]:
    record = find_endpoint(client, name)
    if record is None:
        raise CliError(f"no endpoint named {name}", ExitCode.NOT_FOUND)
    return record


def _stamp() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def wait_endpoint(client: Client, name: str, *, quiet: bool = False) -> dict[str, Any] | None:
    """Poll until the endpoint leaves its transitional status, printing each status on stderr;
    returns its record, or None once it is gone (deleted)."""
    last = said = ""
    while True:
        record = find_endpoint(client, name)
        status = record["EndpointStatus"] if record else "Deleted"
        if status != last and not quiet:
            click.secho(f"{_stamp()} {status}", fg="cyan", err=True)
        last = status
        if status in {"Creating", "Updating"} and not quiet:
            # Waiting for capacity says so (docs/runtimes.md), once per change.
            waiting = queue_wait(client, "endpoint", name)
            if waiting and waiting != said:
                click.secho(f"{_stamp()} {waiting}", fg="yellow", err=True)
            said = waiting
        if record is None or status not in TRANSITIONAL:
            return record
        time.sleep(POLL_SECONDS)


def detached(name: str, doing: str) -> int:
    click.echo(f"\nDetached: endpoint {name} keeps {doing}.\n"
               f"  status: shipyard endpoints describe {name}\n"
               f"  remove: shipyard endpoints delete {name}", err=True)
    return 130


def cli_prefix(settings: Settings) -> str:
    """``shipyard`` plus the global options this command was given that pick the server, so
    a printed command line reaches the same one."""
    words = ["shipyard"]
    for key in _ECHOED_SETTINGS:
        if settings.sources.get(key) == Source.ARGUMENT:
            words += ["--" + key.replace("_", "-"), str(getattr(settings, key))]
    return shlex.join(words)


def deployed_by_cli(client: Client, arn: str, endpoint: str) -> bool:
    """Whether ``shipyard deploy`` created this model or endpoint config for ``endpoint``."""
    tags = client.tags(arn)
    return tags.get(CREATED_BY_TAG) == CREATED_BY_DEPLOY and tags.get(ENDPOINT_TAG) == endpoint


def remove_deployed(client: Client, endpoint: str, config_name: str) -> list[str]:
    """Delete ``config_name`` and its models where ``shipyard deploy`` made them for
    ``endpoint``; returns what was deleted ("endpoint config X", "model Y")."""
    removed: list[str] = []
    try:
        config = client.call("DescribeEndpointConfig", EndpointConfigName=config_name)
    except ValidationError as exc:
        if _is_not_found(exc):
            return removed
        raise
    if not deployed_by_cli(client, config["EndpointConfigArn"], endpoint):
        return removed
    client.call("DeleteEndpointConfig", EndpointConfigName=config_name)
    removed.append(f"endpoint config {config_name}")
    for model_name in sorted({v["ModelName"] for v in config.get("ProductionVariants", [])}):
        try:
            model = client.call("DescribeModel", ModelName=model_name)
        except ValidationError as exc:
            if _is_not_found(exc):
                continue
            raise
        if deployed_by_cli(client, model["ModelArn"], endpoint):
            client.call("DeleteModel", ModelName=model_name)
            removed.append(f"model {model_name}")
    return removed


@click.group()
def endpoints() -> None:
    """Real-time endpoints (`shipyard deploy` creates them, `shipyard invoke` calls them)."""


@endpoints.command("ls")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--limit", default=50, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ls(settings: Settings, status: str | None, limit: int, as_json: bool) -> None:
    """Endpoints, newest first."""
    rows = open_client(settings).list_endpoints(status=status, limit=limit)
    if as_json:
        click.echo(json.dumps([{"Name": r["EndpointName"], "Status": r["EndpointStatus"],
                                "CreationTime": as_datetime(r["CreationTime"]).timestamp(),
                                "LastModifiedTime": as_datetime(
                                    r["LastModifiedTime"]).timestamp()}
                               for r in rows], indent=2))
        return
    click.echo(f"{'NAME':<48} {'STATUS':<15} {'CREATED':<19} MODIFIED")
    waits = []
    client = open_client(settings)
    for r in rows:
        created = as_datetime(r["CreationTime"]).strftime("%Y-%m-%d %H:%M:%S")
        modified = as_datetime(r["LastModifiedTime"]).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{r['EndpointName']:<48} {r['EndpointStatus']:<15} {created:<19} {modified}")
        if r["EndpointStatus"] in {"Creating", "Updating"}:
            waiting = queue_wait(client, "endpoint", r["EndpointName"])
            if waiting:
                waits.append(f"{r['EndpointName']}: {waiting}")
    for line in waits:
        click.echo(line, err=True)


@endpoints.command()
@click.argument("name")
@click.pass_obj
def describe(settings: Settings, name: str) -> None:
    """The endpoint's DescribeEndpoint record, as JSON."""
    record = describe_endpoint(open_client(settings), name)
    click.echo(json.dumps(record, indent=2, default=str))


@endpoints.command()
@click.argument("name")
@click.option("--wait", "wait_", is_flag=True, help="Wait until the endpoint is gone.")
@click.pass_obj
def delete(settings: Settings, name: str, wait_: bool) -> None:
    """Delete an endpoint: its containers get SIGTERM once their requests in flight are done.

    The endpoint config and model(s) it runs are deleted too when `shipyard deploy` created
    them (it names them after the endpoint and tags them); others are left alone.
    """
    client = open_client(settings)
    record = describe_endpoint(client, name)
    with not_found_exits():
        client.call("DeleteEndpoint", EndpointName=name)
    click.echo(f"Deleting endpoint {name}", err=True)
    for what in remove_deployed(client, name, record["EndpointConfigName"]):
        click.echo(f"Deleted {what}", err=True)
    if wait_:
        try:
            wait_endpoint(client, name)
        except KeyboardInterrupt:
            raise SystemExit(detached(name, "shutting down")) from None


#: ``endpoints metrics``'s metrics when none is named, and the statistic each is read with
#: when ``--statistic`` names none (counts are summed, latencies averaged).
DEFAULT_METRICS = ("Invocations", "ModelLatency")
_AVERAGED = frozenset({"ModelLatency", "OverheadLatency", "ModelSetupTime"})
METRICS_NAMESPACE = "AWS/SageMaker"


@endpoints.command()
@click.argument("name")
@click.option("--metric", "metric_names", multiple=True, metavar="METRIC",
              help="A metric of AWS/SageMaker (Invocations, ModelLatency, OverheadLatency, "
                   "Invocation4XXErrors, Invocation5XXErrors, InvocationsPerInstance...); "
                   "repeat for more. Default: Invocations and ModelLatency.")
@click.option("--variant", default=None, help="Only this production variant.")
@click.option("--since", callback=charts.duration, default="1h", metavar="DURATION",
              show_default=True, help="How far back (30s, 10m, 2h, 1d).")
@click.option("--period", type=click.IntRange(min=1), default=60, show_default=True,
              help="Seconds each point aggregates: 1, 5, 10, 20, 30 or a multiple of 60.")
@click.option("--statistic", default=None,
              help="Sum, Average, Minimum, Maximum, SampleCount or a percentile (p99). "
                   "Default: Sum for counts, Average for latencies.")
@click.option("--json", "as_json", is_flag=True, help="The series as JSON, no chart.")
@click.option("--chart/--no-chart", default=None,
              help="Draw a chart per metric below the points (default: at a terminal).")
@click.pass_obj
def metrics(settings: Settings, name: str, metric_names: tuple[str, ...], variant: str | None,
            since: float, period: int, statistic: str | None, as_json: bool,
            chart: bool | None) -> None:
    """An endpoint's CloudWatch metrics (AWS/SageMaker), per variant, and a chart of each."""
    client = open_client(settings)
    series = endpoint_series(settings, client, name, metric_names or DEFAULT_METRICS,
                             variant=variant, since=since, period=period, statistic=statistic)
    if as_json:
        click.echo(json.dumps(series, indent=2))
        return
    if not any(s["Points"] for s in series):
        click.echo(f"No datapoints for endpoint {name} in the last {since:g} s.", err=True)
        return
    for one in series:
        for point in one["Points"]:
            stamp = dt.datetime.fromtimestamp(point["Timestamp"]).strftime("%H:%M:%S")
            click.echo(f"{stamp} {one['VariantName']} {one['MetricName']} "
                       f"{one['Statistic']} = {point['Value']:g}")
    if not charts.wants_chart(chart):
        return
    by_metric: dict[tuple[str, str], list[charts.Series]] = {}
    for one in series:
        line = charts.Series(one["VariantName"])
        for point in one["Points"]:
            line.add(point["Timestamp"], point["Value"])
        by_metric.setdefault((one["MetricName"], one["Statistic"]), []).append(line)
    for (metric_name, stat), lines in by_metric.items():
        if any(line.times for line in lines):
            click.echo()
            click.echo(charts.render(f"{name}: {metric_name} ({stat}, {period} s)", lines,
                                     color=charts.is_terminal()))


def endpoint_series(settings: Settings, client: Client, name: str, metric_names: Sequence[str],
                    *, variant: str | None, since: float, period: int,
                    statistic: str | None) -> list[dict[str, Any]]:
    """The endpoint's series through CloudWatch's GetMetricData, one per metric and variant
    that has data kept (ListMetrics says which): ``MetricName``, ``VariantName``,
    ``Statistic``, ``Period``, ``Points`` (``Timestamp`` as epoch seconds, ``Value``)."""
    cw = _cloudwatch(settings, client)
    with _cloudwatch_errors():
        listed = [m for page in cw.get_paginator("list_metrics").paginate(
            Namespace=METRICS_NAMESPACE,
            Dimensions=[{"Name": "EndpointName", "Value": name}]) for m in page["Metrics"]]
    variants = sorted({d["Value"] for m in listed for d in m.get("Dimensions", [])
                       if d["Name"] == "VariantName"})
    if not variants and find_endpoint(client, name) is None:
        raise CliError(f"no endpoint named {name}", ExitCode.NOT_FOUND)
    if variant is not None:
        variants = [v for v in variants if v == variant]
    wanted = [(metric, v, statistic or ("Average" if metric in _AVERAGED else "Sum"))
              for metric in metric_names for v in variants]
    if not wanted:
        return []
    now = time.time()
    queries = [{"Id": f"m{i}", "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": METRICS_NAMESPACE, "MetricName": metric, "Dimensions": [
            {"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": v}]},
        "Period": period, "Stat": stat}} for i, (metric, v, stat) in enumerate(wanted)]
    points: dict[str, list[dict[str, float]]] = {f"m{i}": [] for i in range(len(queries))}
    with _cloudwatch_errors():
        pages = cw.get_paginator("get_metric_data").paginate(
            MetricDataQueries=queries, ScanBy="TimestampAscending",
            StartTime=dt.datetime.fromtimestamp(now - since, dt.timezone.utc),
            EndTime=dt.datetime.fromtimestamp(now + period, dt.timezone.utc))
        for page in pages:
            for result in page["MetricDataResults"]:
                points[result["Id"]] += [
                    {"Timestamp": stamp.timestamp(), "Value": float(value)}
                    for stamp, value in zip(result["Timestamps"], result["Values"],
                                            strict=True)]
    return [{"MetricName": metric, "VariantName": v, "Statistic": stat, "Period": period,
             "Points": points[f"m{i}"]} for i, (metric, v, stat) in enumerate(wanted)]


def _cloudwatch(settings: Settings, client: Client) -> Any:
    """A boto3 ``cloudwatch`` client of the server ``client`` talks to, with its key pair."""
    import boto3
    from botocore.config import Config

    from shipyard.api.credentials import load_or_create

    akid, secret = load_or_create(settings.data_dir).default
    session = boto3.session.Session(aws_access_key_id=akid, aws_secret_access_key=secret,
                                    region_name=client.region)
    return session.client("cloudwatch", endpoint_url=client.url, config=Config(
        retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60))


@contextlib.contextmanager
def _cloudwatch_errors() -> Iterator[None]:
    """CloudWatch's refusals (a bad period or statistic) exit USAGE; no answer, PLATFORM."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise CliError(str(error.get("Message") or error.get("Code") or exc),
                       ExitCode.USAGE) from exc
    except BotoCoreError as exc:
        raise CliError(f"cannot reach the Shipyard server: {exc}", ExitCode.PLATFORM) from exc
