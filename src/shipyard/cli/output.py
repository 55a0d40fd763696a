"""Watching a job from the terminal: logs, status changes, the final summary, Ctrl-C detach."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import click

from shipyard.cli.errors import CliError, ExitCode
from shipyard.control import ControlPlane, Settings, records
from shipyard.errors import ResourceNotFound

LABELS = {"training": "training", "processing": "processing"}


def open_plane(settings: Settings) -> ControlPlane:
    # Detached supervisors: the job outlives this command (and its Ctrl-C).
    return ControlPlane(settings, launch="process")


def find_kind(plane: ControlPlane, name: str, kind: str | None) -> str:
    kinds = [kind] if kind else list(LABELS)
    for candidate in kinds:
        try:
            plane.ctx.store.get_job(candidate, name)
            return candidate
        except ResourceNotFound:
            continue
    raise CliError(f"no job named {name}", ExitCode.NOT_FOUND)


def _stamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def exit_code_for(kind: str, record: dict[str, Any]) -> int:
    status = records.status_of(kind, record)
    return {records.COMPLETED: ExitCode.OK, records.STOPPED: ExitCode.JOB_STOPPED}.get(
        status, ExitCode.JOB_FAILED)


def watch(plane: ControlPlane, kind: str, name: str, *, show_logs: bool = True,
          as_json: bool = False) -> int:
    """Print logs and status changes until the job ends; Ctrl-C leaves it running."""
    store, logs = plane.ctx.store, plane.ctx.logs
    offsets: dict[str, int] = {}
    shown = 0
    last_status = ""
    try:
        while True:
            row = store.get_job(kind, name)
            record = row.record
            if not as_json:
                for transition in record.get("SecondaryStatusTransitions", [])[shown:]:
                    click.secho(f"{_stamp(transition['StartTime'])} {transition['Status']} - "
                                f"{transition['StatusMessage']}", fg="cyan", err=True)
                shown = len(record.get("SecondaryStatusTransitions", []))
                if kind != "training" and row.status != last_status:
                    click.secho(f"{_stamp(time.time())} {row.status}", fg="cyan", err=True)
                last_status = row.status
            got = False
            if show_logs and not as_json:
                for host in logs.hosts(kind, name):
                    events, offsets[host] = logs.read(kind, name, host, offsets.get(host, 0))
                    for event in events:
                        got = True
                        prefix = f"[{host}] " if len(offsets) > 1 else ""
                        click.echo(prefix + event.message)
            if row.status in records.TERMINAL_STATUSES and not got:
                break
            if not got:
                time.sleep(0.2)
    except KeyboardInterrupt:
        label = LABELS[kind]
        click.echo(
            f"\nDetached: {label} job {name} keeps running.\n"
            f"  reattach: shipyard jobs logs -f {name}\n"
            f"  status:   shipyard jobs describe {name}\n"
            f"  stop:     shipyard jobs stop {name}", err=True)
        return 130
    record = store.get_job(kind, name).record
    summarize(kind, record, as_json=as_json)
    return exit_code_for(kind, record)


def summarize(kind: str, record: dict[str, Any], *, as_json: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    status = records.status_of(kind, record)
    colour = {records.COMPLETED: "green", records.STOPPED: "yellow"}.get(status, "red")
    click.secho(f"{LABELS[kind].capitalize()} job {record.get('TrainingJobName') or record.get('ProcessingJobName')}: {status}", fg=colour, err=True)  # noqa: E501
    if record.get("FailureReason"):
        click.echo(f"FailureReason: {record['FailureReason']}", err=True)
    if record.get("ExitMessage"):
        click.echo(f"ExitMessage: {record['ExitMessage']}", err=True)
    if kind == "training" and status != records.FAILED:
        click.echo(f"Model artifacts: {record['ModelArtifacts']['S3ModelArtifacts']}", err=True)
    for metric in record.get("FinalMetricDataList", []):
        click.echo(f"  {metric['MetricName']} = {metric['Value']}", err=True)
