"""``shipyard transform``: a batch transform job (a model run over a dataset) and its end."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any

import click

from shipyard import kinds
from shipyard.cli.deploy import model_data_uri
from shipyard.cli.endpoints import CREATED_BY_TAG, not_found_exits
from shipyard.cli.errors import CliError, ExitCode
from shipyard.cli.output import open_client
from shipyard.cli.parsing import default_job_name, pairs, to_uri
from shipyard.client import Client
from shipyard.errors import ValidationError
from shipyard.settings import Settings

KIND = kinds.TRANSFORM.key
TERMINAL = ("Completed", "Failed", "Stopped")
POLL_SECONDS = 0.5
#: SageMaker's model name rule: what is not a model name is an image.
_MODEL_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
CREATED_BY_TRANSFORM = "shipyard transform"


def _existing_model(client: Client, value: str) -> bool:
    if not _MODEL_NAME.fullmatch(value):
        return False
    try:
        client.call("DescribeModel", ModelName=value)
        return True
    except ValidationError as exc:
        if str(exc).startswith("Could not find"):
            return False
        raise


def _stamp() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@click.command()
@click.argument("model")
@click.option("--input", "input_uri", required=True,
              help="Input: s3://, file:// or a local path (a prefix: every object below it).")
@click.option("--output", "output_uri", required=True,
              help="S3OutputPath: each input object's answers go to <object>.out below it.")
@click.option("--name", help="Job name (default: model or image name + timestamp).")
@click.option("--model-data", help="When MODEL is an image: its ModelDataUrl (s3://, file://, "
              "or a local model.tar.gz or folder).")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE",
              help="Container environment. Repeatable.")
@click.option("--content-type", help="ContentType of the input, sent with every request.")
@click.option("--split-type", type=click.Choice(["None", "Line", "RecordIO", "TFRecord"]),
              help="How input objects split into records [default: None, whole objects].")
@click.option("--compression", type=click.Choice(["None", "Gzip"]),
              help="CompressionType of the input objects.")
@click.option("--strategy", type=click.Choice(["MultiRecord", "SingleRecord"]),
              help="BatchStrategy: records per request [default: the container's].")
@click.option("--max-payload-mb", type=int, help="MaxPayloadInMB of one request.")
@click.option("--concurrency", type=int, help="MaxConcurrentTransforms per instance.")
@click.option("--assemble-with", type=click.Choice(["None", "Line"]),
              help="How answers are joined into an output object.")
@click.option("--accept", help="Accept sent with every request (and the output's type).")
@click.option("--input-filter", help="JSONPath selecting what of each record is sent.")
@click.option("--output-filter", help="JSONPath selecting what of each answer is kept.")
@click.option("--join-source", type=click.Choice(["None", "Input"]),
              help="Input: join each answer to its input record.")
@click.option("--instance-type", default="local", show_default=True)
@click.option("--instance-count", default=1, show_default=True, type=int)
@click.option("--no-wait", is_flag=True, help="Return once the job is created.")
@click.option("--json", "as_json", is_flag=True, help="Print the final record as JSON.")
@click.pass_obj
def transform(settings: Settings, model: str, input_uri: str, output_uri: str,
              name: str | None, model_data: str | None, envs: tuple[str, ...],
              content_type: str | None, split_type: str | None, compression: str | None,
              strategy: str | None, max_payload_mb: int | None, concurrency: int | None,
              assemble_with: str | None, accept: str | None, input_filter: str | None,
              output_filter: str | None, join_source: str | None, instance_type: str,
              instance_count: int, no_wait: bool, as_json: bool) -> None:
    """Run MODEL over a dataset as a batch transform job (CreateTransformJob) and wait.

    MODEL is an existing model's name, or an image: then a model is created for it first
    (named after the job, with --model-data). Exit codes as `shipyard train`: 0 Completed,
    1 Failed, 5 Stopped.
    """
    name = name or default_job_name(model)
    client = open_client(settings)
    if _existing_model(client, model):
        if model_data:
            raise CliError(f"{model} is an existing model: --model-data applies to an image",
                           ExitCode.USAGE)
        model_name = model
    else:
        model_name = name
        container: dict[str, Any] = {"Image": model}
        if model_data:
            container["ModelDataUrl"] = model_data_uri(model_data)
        client.call("CreateModel", ModelName=model_name, PrimaryContainer=container,
                    ExecutionRoleArn=f"arn:aws:iam::{settings.account_id}:role/shipyard",
                    Tags=[{"Key": CREATED_BY_TAG, "Value": CREATED_BY_TRANSFORM}])
        click.echo(f"Model {model_name} created for {model}", err=True)
    request: dict[str, Any] = _drop_none({
        "TransformJobName": name,
        "ModelName": model_name,
        "Environment": pairs(envs, "--env"),
        "BatchStrategy": strategy,
        "MaxPayloadInMB": max_payload_mb,
        "MaxConcurrentTransforms": concurrency,
        "TransformInput": _drop_none({
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                            "S3Uri": to_uri(input_uri)}},
            "ContentType": content_type, "SplitType": split_type,
            "CompressionType": compression}),
        "TransformOutput": _drop_none({"S3OutputPath": to_uri(output_uri), "Accept": accept,
                                       "AssembleWith": assemble_with}),
        "TransformResources": {"InstanceType": instance_type, "InstanceCount": instance_count},
    })
    processing = _drop_none({"InputFilter": input_filter, "OutputFilter": output_filter,
                             "JoinSource": join_source})
    if processing:
        request["DataProcessing"] = processing
    try:
        with not_found_exits():
            arn = client.create_job(KIND, request)
    except CliError:
        if model_name != model:  # the model made for this job is of no use without it
            client.call("DeleteModel", ModelName=model_name)
        raise
    if no_wait:
        click.echo(json.dumps({"TransformJobArn": arn, "TransformJobName": name}) if as_json
                   else arn)
        return
    click.echo(f"Transform job {name} created ({arn})", err=True)
    raise SystemExit(_watch(client, name, as_json=as_json))


def _watch(client: Client, name: str, *, as_json: bool) -> int:
    """Print status changes until the job ends; Ctrl-C leaves it running."""
    last = ""
    try:
        while True:
            record = client.describe(KIND, name)
            status = record[kinds.TRANSFORM.status_field]
            if status != last and not as_json:
                click.secho(f"{_stamp()} {status}", fg="cyan", err=True)
            last = status
            if status in TERMINAL:
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        click.echo(f"\nDetached: transform job {name} keeps running.\n"
                   f"  reattach: shipyard jobs wait {name}\n"
                   f"  logs:     shipyard jobs logs -f {name}\n"
                   f"  stop:     shipyard jobs stop {name}", err=True)
        return 130
    if as_json:
        click.echo(json.dumps(record, indent=2, default=str))
    else:
        colour = {"Completed": "green", "Stopped": "yellow"}.get(status, "red")
        click.secho(f"Transform job {name}: {status}", fg=colour, err=True)
        if record.get("FailureReason"):
            click.echo(f"FailureReason: {record['FailureReason']}", err=True)
        if status == "Completed":
            click.echo(f"Output: {record['TransformOutput']['S3OutputPath']}", err=True)
    return {"Completed": ExitCode.OK, "Stopped": ExitCode.JOB_STOPPED}.get(
        status, ExitCode.JOB_FAILED)
