"""``shipyard jobs ls | describe | logs | stop | wait | metrics``."""

from __future__ import annotations

import datetime as dt
import json
import time

import click

from shipyard.cli import charts
from shipyard.cli.errors import CliError, ExitCode
from shipyard.cli.output import (
    JOB_KINDS,
    as_datetime,
    exit_code_for,
    find_kind,
    open_client,
    queue_wait,
    summarize,
    watch,
)
from shipyard.settings import Settings

_KIND = click.option("--kind", type=click.Choice(sorted(JOB_KINDS)), default=None,
                     help="Job kind, when jobs of different kinds share a name.")
_STATUSES = ["InProgress", "Stopping", "Completed", "Failed", "Stopped"]


@click.group()
def jobs() -> None:
    """Training and processing jobs."""


@jobs.command("ls")
@click.option("--kind", type=click.Choice(sorted(JOB_KINDS)), default=None)
@click.option("--status", type=click.Choice(_STATUSES))
@click.option("--limit", default=50, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ls(settings: Settings, kind: str | None, status: str | None, limit: int,
       as_json: bool) -> None:
    """Jobs, newest first."""
    client = open_client(settings)
    rows = []
    for k in [kind] if kind else sorted(JOB_KINDS):
        for summary in client.list_jobs(k, status=status, limit=limit):
            rows.append((k, summary))
    rows.sort(key=lambda kr: as_datetime(kr[1]["CreationTime"]), reverse=True)
    rows = rows[:limit]
    if as_json:
        click.echo(json.dumps([{"Kind": k, "Name": s[JOB_KINDS[k].name_field],
                                "Status": s[JOB_KINDS[k].status_field],
                                "CreationTime": as_datetime(s["CreationTime"]).timestamp()}
                               for k, s in rows], indent=2))
        return
    click.echo(f"{'NAME':<48} {'KIND':<11} {'STATUS':<11} {'SECONDARY':<19} CREATED")
    waits = []
    for k, s in rows:
        created = as_datetime(s["CreationTime"]).strftime("%Y-%m-%d %H:%M:%S")
        name, status = s[JOB_KINDS[k].name_field], s[JOB_KINDS[k].status_field]
        # Work waiting for capacity is Starting, and says what for (docs/runtimes.md).
        waiting = queue_wait(client, k, name) if status == "InProgress" else ""
        secondary = "Starting (queued)" if waiting else s.get("SecondaryStatus", "-")
        click.echo(f"{name:<48} {k:<11} {status:<11} {secondary:<19} {created}")
        if waiting:
            waits.append(f"{name}: {waiting}")
    for line in waits:
        click.echo(line, err=True)


@jobs.command()
@click.argument("name")
@_KIND
@click.pass_obj
def describe(settings: Settings, name: str, kind: str | None) -> None:
    """The job's full record (DescribeTrainingJob / DescribeProcessingJob), as JSON."""
    client = open_client(settings)
    kind = find_kind(client, name, kind)
    record = client.describe(kind, name)
    if record.get(JOB_KINDS[kind].status_field) == "InProgress":
        # What it waits for in the capacity queue: a Shipyard member boto3 drops.
        waiting = queue_wait(client, kind, name)
        if waiting:
            record["StatusMessage"] = waiting
    click.echo(json.dumps(record, indent=2, default=str))


@jobs.command()
@click.argument("name")
@_KIND
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.pass_obj
def logs(settings: Settings, name: str, kind: str | None, follow: bool) -> None:
    """The job's logs, every host; with -f, live until it ends (Ctrl-C detaches)."""
    client = open_client(settings)
    kind = find_kind(client, name, kind)
    if JOB_KINDS[kind].log_group is None:
        # A tuning job runs no container: its trials are training jobs with logs of their own.
        raise CliError(f"{JOB_KINDS[kind].label} {name} has no log of its own; its trials "
                       f"do: shipyard tuning jobs {name}, then shipyard jobs logs TRIAL",
                       ExitCode.USAGE)
    if follow:
        raise SystemExit(watch(client, kind, name))
    streams = client.log_streams(kind, name)
    for stream in streams:
        lines, _ = client.read_logs(kind, stream, None)
        host = stream.split("/", 1)[1].rsplit("-", 1)[0]
        for line in lines:
            click.echo((f"[{host}] " if len(streams) > 1 else "") + line.message)


@jobs.command()
@click.argument("name")
@_KIND
@click.option("--wait", "wait_", is_flag=True, help="Wait until the job has stopped.")
@click.pass_obj
def stop(settings: Settings, name: str, kind: str | None, wait_: bool) -> None:
    """Stop a job: SIGTERM, then SIGKILL after the grace period."""
    client = open_client(settings)
    kind = find_kind(client, name, kind)
    client.stop(kind, name)
    click.echo(f"Stopping {JOB_KINDS[kind].label} {name}", err=True)
    if wait_:
        record = client.wait(kind, name)
        summarize(kind, record)
        raise SystemExit(exit_code_for(kind, record))


@jobs.command()
@click.argument("name")
@_KIND
@click.pass_obj
def wait(settings: Settings, name: str, kind: str | None) -> None:
    """Wait for a job to end; the exit code says how it ended."""
    client = open_client(settings)
    kind = find_kind(client, name, kind)
    record = client.wait(kind, name)
    summarize(kind, record)
    raise SystemExit(exit_code_for(kind, record))


@jobs.command()
@click.argument("name")
@click.option("--metric", default=None, help="Only this metric.")
@click.option("--since", callback=charts.duration, default=None, metavar="DURATION",
              help="Only points of the last DURATION (30s, 10m, 2h, 1d).")
@click.option("--json", "as_json", is_flag=True, help="The points as JSON, no chart.")
@click.option("--chart/--no-chart", default=None,
              help="Draw a chart per metric below the points (default: at a terminal).")
@click.pass_obj
def metrics(settings: Settings, name: str, metric: str | None, since: float | None,
            as_json: bool, chart: bool | None) -> None:
    """A training job's metric time series, and a chart of each metric."""
    start = None if since is None else time.time() - since
    series = [p for p in open_client(settings).metric_series(name, metric)
              if start is None or p["Timestamp"] >= start]
    if as_json:
        click.echo(json.dumps(series, indent=2))
        return
    for point in series:
        stamp = dt.datetime.fromtimestamp(point["Timestamp"]).strftime("%H:%M:%S.%f")[:-3]
        click.echo(f"{stamp} {point['Host']} {point['MetricName']} = {point['Value']}")
    if not charts.wants_chart(chart):
        return
    lines: dict[str, dict[str, charts.Series]] = {}
    for point in series:
        by_host = lines.setdefault(point["MetricName"], {})
        by_host.setdefault(point["Host"], charts.Series(point["Host"])).add(
            point["Timestamp"], point["Value"])
    for metric_name, by_host in lines.items():
        click.echo()
        click.echo(charts.render(f"{name}: {metric_name}", list(by_host.values()),
                                 color=charts.is_terminal()))
