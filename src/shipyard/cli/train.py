"""``shipyard train``: run a training job and follow it."""

from __future__ import annotations

import json
from typing import Any

import click

from shipyard import kinds
from shipyard.cli.output import open_client, watch
from shipyard.cli.parsing import default_job_name, pairs, split_command, to_uri
from shipyard.settings import Settings


@click.command()
@click.argument("image")
@click.option("--name", help="Job name (default: image name + timestamp).")
@click.option("--channel", "channels", multiple=True, metavar="NAME=URI",
              help="Input channel: s3://, file:// or a local path. Repeatable.")
@click.option("--sharded", "sharded", multiple=True, metavar="NAME",
              help="Give each instance a share of this channel (ShardedByS3Key).")
@click.option("--hp", "hps", multiple=True, metavar="KEY=VALUE", help="Hyperparameter.")
@click.option("--output", "output_path", help="S3OutputPath (default: file://DATA_DIR/output).")
@click.option("--instance-type", default="local", show_default=True)
@click.option("--instance-count", default=1, show_default=True, type=int)
@click.option("--max-runtime", default=86400, show_default=True, type=int,
              help="MaxRuntimeInSeconds.")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE")
@click.option("--metric", "metrics", multiple=True, metavar="NAME=REGEX",
              help="Metric definition applied to the logs.")
@click.option("--entrypoint", help="ContainerEntrypoint, as a shell-quoted string.")
@click.option("--arg", "args", multiple=True, help="ContainerArguments item. Repeatable.")
@click.option("--checkpoint", "checkpoint_uri", help="CheckpointConfig.S3Uri.")
@click.option("--network-isolation", is_flag=True)
@click.option("--detach", is_flag=True, help="Return once the job is created.")
@click.option("--quiet", is_flag=True, help="Do not print the job's logs.")
@click.option("--json", "as_json", is_flag=True, help="Print the final record as JSON.")
@click.pass_obj
def train(settings: Settings, image: str, name: str | None, channels: tuple[str, ...],
          sharded: tuple[str, ...], hps: tuple[str, ...], output_path: str | None,
          instance_type: str, instance_count: int, max_runtime: int, envs: tuple[str, ...],
          metrics: tuple[str, ...], entrypoint: str | None, args: tuple[str, ...],
          checkpoint_uri: str | None, network_isolation: bool, detach: bool, quiet: bool,
          as_json: bool) -> None:
    """Run IMAGE as a SageMaker training job (``docker run IMAGE train``)."""
    name = name or default_job_name(image)
    algo: dict[str, Any] = {"TrainingImage": image, "TrainingInputMode": "File"}
    if metrics:
        algo["MetricDefinitions"] = [{"Name": k, "Regex": v}
                                     for k, v in pairs(metrics, "--metric").items()]
    if entrypoint:
        algo["ContainerEntrypoint"] = split_command(entrypoint)
    if args:
        algo["ContainerArguments"] = list(args)
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": algo,
        "RoleArn": f"arn:aws:iam::{settings.account_id}:role/shipyard",
        "HyperParameters": pairs(hps, "--hp"),
        "InputDataConfig": [
            {"ChannelName": ch, "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": to_uri(uri),
                "S3DataDistributionType": "ShardedByS3Key" if ch in sharded
                else "FullyReplicated"}}}
            for ch, uri in pairs(channels, "--channel").items()
        ],
        "OutputDataConfig": {"S3OutputPath": to_uri(output_path) if output_path
                             else (settings.data_dir / "output").as_uri()},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": instance_count,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
        "Environment": pairs(envs, "--env"),
        "EnableNetworkIsolation": network_isolation,
    }
    if checkpoint_uri:
        request["CheckpointConfig"] = {"S3Uri": to_uri(checkpoint_uri)}
    client = open_client(settings)
    arn = client.create_job(kinds.TRAINING.key, request)
    if detach:
        click.echo(json.dumps({"TrainingJobArn": arn, "TrainingJobName": name}) if as_json
                   else arn)
        return
    click.echo(f"Training job {name} created ({arn})", err=True)
    raise SystemExit(watch(client, kinds.TRAINING.key, name, show_logs=not quiet, as_json=as_json))
