"""Watching a job from the terminal: logs, status changes, the final summary, Ctrl-C detach."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import click

from shipyard import kinds
from shipyard.cli.errors import CliError, ExitCode
from shipyard.client import Client
from shipyard.settings import Settings

#: The job kinds, by the key ``--kind`` takes.
JOB_KINDS = {k.key: k for k in kinds.JOBS}
TERMINAL = ("Completed", "Failed", "Stopped")
#: How often the job's status is asked for while logs are followed.
DESCRIBE_EVERY_SECONDS = 0.5


def open_client(settings: Settings) -> Client:
    # The server hosts the jobs: they outlive this command (and its Ctrl-C).
    return Client.for_settings(settings)


def find_kind(client: Client, name: str, kind: str | None) -> str:
    found = client.find_kind(name, kind)
    if found is None:
        raise CliError(f"no job named {name}", ExitCode.NOT_FOUND)
    return found


def queue_wait(client: Client, kind: str, name: str) -> str:
    """What an InProgress job waits for in the capacity queue ("Waiting for capacity: ..."),
    or "": the record's Shipyard member ``StatusMessage``, which boto3 drops."""
    spec = kinds.get(kind)
    record = client.raw_call(spec.operation("Describe"), **{spec.name_field: name})
    return str(record.get("StatusMessage") or "")


def _stamp(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def exit_code_for(kind: str, record: dict[str, Any]) -> int:
    status = record[JOB_KINDS[kind].status_field]
    return {"Completed": ExitCode.OK, "Stopped": ExitCode.JOB_STOPPED}.get(
        status, ExitCode.JOB_FAILED)


def as_datetime(value: Any) -> dt.datetime:
    """boto3 parses timestamps into datetimes; raw epoch seconds are accepted too."""
    return value if isinstance(value, dt.datetime) else dt.datetime.fromtimestamp(float(value))


def watch(client: Client, kind: str, name: str, *, show_logs: bool = True,
          as_json: bool = False) -> int:
    """Print logs and status changes until the job ends; Ctrl-C leaves it running."""
    tokens: dict[str, str | None] = {}
    shown = 0
    last_status = ""
    last_wait: str | None = ""
    next_describe = 0.0
    record: dict[str, Any] = {}

    def drain() -> bool:
        if not show_logs or as_json:
            return False
        got = False
        streams = client.log_streams(kind, name)
        for stream in streams:
            lines, tokens[stream] = client.read_logs(kind, stream, tokens.get(stream))
            for line in lines:
                got = True
                host = stream.split("/", 1)[1].rsplit("-", 1)[0]
                click.echo((f"[{host}] " if len(streams) > 1 else "") + line.message)
        return got

    try:
        while True:
            if time.monotonic() >= next_describe:
                record = client.describe(kind, name)
                next_describe = time.monotonic() + DESCRIBE_EVERY_SECONDS
                status = record[JOB_KINDS[kind].status_field]
                if not as_json:
                    transitions = record.get("SecondaryStatusTransitions", [])
                    for transition in transitions[shown:]:
                        click.secho(f"{_stamp(as_datetime(transition['StartTime']).timestamp())} "
                                    f"{transition['Status']} - {transition['StatusMessage']}",
                                    fg="cyan", err=True)
                    shown = len(transitions)
                    if kind != kinds.TRAINING.key and status != last_status:
                        click.secho(f"{_stamp(time.time())} {status}", fg="cyan", err=True)
                    if status == "InProgress" and last_wait is not None:
                        # Until it leaves the capacity queue (or was never in it).
                        waiting = queue_wait(client, kind, name)
                        if waiting and waiting != last_wait:
                            click.secho(f"{_stamp(time.time())} {waiting}", fg="yellow",
                                        err=True)
                        last_wait = waiting or None
                last_status = status
            if last_status in TERMINAL:
                # Every line was stored before the status became final: one last drain.
                drain()
                break
            if not drain():
                time.sleep(0.2)
    except KeyboardInterrupt:
        click.echo(
            f"\nDetached: {JOB_KINDS[kind].label} {name} keeps running.\n"
            f"  reattach: shipyard jobs logs -f {name}\n"
            f"  status:   shipyard jobs describe {name}\n"
            f"  stop:     shipyard jobs stop {name}", err=True)
        return 130
    summarize(kind, record, as_json=as_json)
    return exit_code_for(kind, record)


def summarize(kind: str, record: dict[str, Any], *, as_json: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
        return
    status = record[JOB_KINDS[kind].status_field]
    colour = {"Completed": "green", "Stopped": "yellow"}.get(status, "red")
    spec = JOB_KINDS[kind]
    click.secho(f"{spec.label.capitalize()} {record[spec.name_field]}: {status}",
                fg=colour, err=True)
    if record.get("FailureReason"):
        click.echo(f"FailureReason: {record['FailureReason']}", err=True)
    if record.get("ExitMessage"):
        click.echo(f"ExitMessage: {record['ExitMessage']}", err=True)
    if kind == kinds.TRAINING.key and status != "Failed":
        click.echo(f"Model artifacts: {record['ModelArtifacts']['S3ModelArtifacts']}", err=True)
    for metric in record.get("FinalMetricDataList", []):
        click.echo(f"  {metric['MetricName']} = {metric['Value']}", err=True)
