"""``shipyard jobs ls | describe | logs | stop | metrics | wait``."""

from __future__ import annotations

import datetime as dt
import json

import click

from shipyard.cli.output import LABELS, exit_code_for, find_kind, open_plane, summarize, watch
from shipyard.control import Settings, records

_KIND = click.option("--kind", type=click.Choice(sorted(LABELS)), default=None,
                     help="Job kind, when a training and a processing job share a name.")


@click.group()
def jobs() -> None:
    """Training and processing jobs."""


@jobs.command("ls")
@click.option("--kind", type=click.Choice(sorted(LABELS)), default=None)
@click.option("--status", type=click.Choice([*records.ACTIVE_STATUSES,
                                             *records.TERMINAL_STATUSES]))
@click.option("--limit", default=50, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ls(settings: Settings, kind: str | None, status: str | None, limit: int,
       as_json: bool) -> None:
    """Jobs, newest first."""
    plane = open_plane(settings)
    rows = []
    for k in [kind] if kind else sorted(LABELS):
        for row in plane.ctx.store.list_jobs(k, statuses=(status,) if status else (),
                                             limit=limit):
            rows.append((k, row))
    rows.sort(key=lambda kr: kr[1].record["CreationTime"], reverse=True)
    rows = rows[:limit]
    if as_json:
        click.echo(json.dumps([{"Kind": k, "Name": r.name, "Arn": r.arn, "Status": r.status,
                                "CreationTime": r.record["CreationTime"]} for k, r in rows],
                              indent=2))
        return
    click.echo(f"{'NAME':<48} {'KIND':<11} {'STATUS':<11} {'SECONDARY':<19} CREATED")
    for k, r in rows:
        created = dt.datetime.fromtimestamp(r.record["CreationTime"]).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{r.name:<48} {k:<11} {r.status:<11} "
                   f"{r.record.get('SecondaryStatus', '-'):<19} {created}")


@jobs.command()
@click.argument("name")
@_KIND
@click.pass_obj
def describe(settings: Settings, name: str, kind: str | None) -> None:
    """The job's full record (DescribeTrainingJob / DescribeProcessingJob shape), as JSON."""
    plane = open_plane(settings)
    kind = find_kind(plane, name, kind)
    click.echo(json.dumps(plane.ctx.store.get_job(kind, name).record, indent=2, default=str))


@jobs.command()
@click.argument("name")
@_KIND
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.pass_obj
def logs(settings: Settings, name: str, kind: str | None, follow: bool) -> None:
    """The job's logs, every host; with -f, live until it ends (Ctrl-C detaches)."""
    plane = open_plane(settings)
    kind = find_kind(plane, name, kind)
    if follow:
        raise SystemExit(watch(plane, kind, name))
    hosts = plane.ctx.logs.hosts(kind, name)
    for event in plane.follow_logs(kind, name, follow=False):
        click.echo((f"[{event.host}] " if len(hosts) > 1 else "") + event.message)


@jobs.command()
@click.argument("name")
@_KIND
@click.option("--wait", "wait_", is_flag=True, help="Wait until the job has stopped.")
@click.pass_obj
def stop(settings: Settings, name: str, kind: str | None, wait_: bool) -> None:
    """Stop a job: SIGTERM, then SIGKILL after the grace period."""
    plane = open_plane(settings)
    kind = find_kind(plane, name, kind)
    plane.stop_job(kind, name)
    click.echo(f"Stopping {LABELS[kind]} job {name}", err=True)
    if wait_:
        record = plane.wait(kind, name)
        summarize(kind, record)
        raise SystemExit(exit_code_for(kind, record))


@jobs.command()
@click.argument("name")
@_KIND
@click.pass_obj
def wait(settings: Settings, name: str, kind: str | None) -> None:
    """Wait for a job to end; the exit code says how it ended."""
    plane = open_plane(settings)
    kind = find_kind(plane, name, kind)
    record = plane.wait(kind, name)
    summarize(kind, record)
    raise SystemExit(exit_code_for(kind, record))


@jobs.command()
@click.argument("name")
@click.option("--metric", default=None, help="Only this metric.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def metrics(settings: Settings, name: str, metric: str | None, as_json: bool) -> None:
    """A training job's metric time series."""
    plane = open_plane(settings)
    series = plane.metric_series("training", find_kind(plane, name, "training") and name,
                                 metric)
    if as_json:
        click.echo(json.dumps(series, indent=2))
        return
    for point in series:
        stamp = dt.datetime.fromtimestamp(point["Timestamp"]).strftime("%H:%M:%S.%f")[:-3]
        click.echo(f"{stamp} {point['Host']} {point['MetricName']} = {point['Value']}")
