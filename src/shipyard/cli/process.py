"""``shipyard process``: run a processing job and follow it."""

from __future__ import annotations

import json
from typing import Any

import click

from shipyard import kinds
from shipyard.cli.output import open_client, watch
from shipyard.cli.parsing import default_job_name, pairs, split_command, to_uri
from shipyard.settings import Settings


def _io(values: tuple[str, ...], what: str, default_dir: str) -> list[tuple[str, str, str]]:
    out = []
    for name, spec in pairs(values, what).items():
        uri, sep, local = spec.rpartition("@") if "@/" in spec else (spec, "", "")
        out.append((name, to_uri(uri), local if sep else f"{default_dir}/{name}"))
    return out


@click.command()
@click.argument("image")
@click.option("--name", help="Job name (default: image name + timestamp).")
@click.option("--input", "inputs", multiple=True, metavar="NAME=URI[@LOCALPATH]",
              help="Input, mounted at LOCALPATH (default /opt/ml/processing/input/NAME).")
@click.option("--output", "outputs", multiple=True, metavar="NAME=URI[@LOCALPATH]",
              help="Output uploaded from LOCALPATH (default /opt/ml/processing/output/NAME).")
@click.option("--entrypoint", help="ContainerEntrypoint, as a shell-quoted string.")
@click.option("--arg", "args", multiple=True, help="ContainerArguments item. Repeatable.")
@click.option("--instance-type", default="local", show_default=True)
@click.option("--instance-count", default=1, show_default=True, type=int)
@click.option("--max-runtime", default=86400, show_default=True, type=int)
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE")
@click.option("--network-isolation", is_flag=True)
@click.option("--detach", is_flag=True, help="Return once the job is created.")
@click.option("--quiet", is_flag=True, help="Do not print the job's logs.")
@click.option("--json", "as_json", is_flag=True, help="Print the final record as JSON.")
@click.pass_obj
def process(settings: Settings, image: str, name: str | None, inputs: tuple[str, ...],
            outputs: tuple[str, ...], entrypoint: str | None, args: tuple[str, ...],
            instance_type: str, instance_count: int, max_runtime: int, envs: tuple[str, ...],
            network_isolation: bool, detach: bool, quiet: bool, as_json: bool) -> None:
    """Run IMAGE as a SageMaker processing job."""
    name = name or default_job_name(image)
    app: dict[str, Any] = {"ImageUri": image}
    if entrypoint:
        app["ContainerEntrypoint"] = split_command(entrypoint)
    if args:
        app["ContainerArguments"] = list(args)
    request: dict[str, Any] = {
        "ProcessingJobName": name,
        "AppSpecification": app,
        "RoleArn": f"arn:aws:iam::{settings.account_id}:role/shipyard",
        "ProcessingResources": {"ClusterConfig": {
            "InstanceType": instance_type, "InstanceCount": instance_count,
            "VolumeSizeInGB": 30}},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
        "Environment": pairs(envs, "--env"),
        "ProcessingInputs": [
            {"InputName": n, "S3Input": {"S3Uri": uri, "LocalPath": local,
                                         "S3DataType": "S3Prefix", "S3InputMode": "File"}}
            for n, uri, local in _io(inputs, "--input", "/opt/ml/processing/input")
        ],
        "NetworkConfig": {"EnableNetworkIsolation": network_isolation},
    }
    outs = _io(outputs, "--output", "/opt/ml/processing/output")
    if outs:
        request["ProcessingOutputConfig"] = {"Outputs": [
            {"OutputName": n, "S3Output": {"S3Uri": uri, "LocalPath": local,
                                           "S3UploadMode": "EndOfJob"}}
            for n, uri, local in outs]}
    client = open_client(settings)
    arn = client.create_job(kinds.PROCESSING.key, request)
    if detach:
        click.echo(json.dumps({"ProcessingJobArn": arn, "ProcessingJobName": name}) if as_json
                   else arn)
        return
    click.echo(f"Processing job {name} created ({arn})", err=True)
    raise SystemExit(watch(client, kinds.PROCESSING.key, name, show_logs=not quiet,
                           as_json=as_json))
