"""``shipyard deploy``: a model, an endpoint config and an endpoint in one step, then wait."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from shipyard.cli.endpoints import (
    CREATED_BY_DEPLOY,
    CREATED_BY_TAG,
    ENDPOINT_TAG,
    cli_prefix,
    detached,
    find_endpoint,
    remove_deployed,
    wait_endpoint,
)
from shipyard.cli.errors import CliError, ExitCode
from shipyard.cli.output import open_client
from shipyard.cli.parsing import default_job_name, pairs, to_uri
from shipyard.client import Client
from shipyard.errors import ShipyardError
from shipyard.settings import Settings

#: SageMaker names (models, configs, endpoints) are at most 63 characters.
MAX_NAME = 63
_STAMP_FORMAT = "%Y%m%d-%H%M%S"
IN_SERVICE = "InService"


def model_data_uri(value: str) -> str:
    """s3:// and file:// as given; a local tarball or folder as an absolute file:// URI."""
    if "://" not in value and not Path(value).expanduser().exists():
        raise CliError(f"--model-data {value}: no such file or folder", ExitCode.USAGE)
    return to_uri(value)


def _version_name(endpoint: str) -> str:
    """The model and config of an update: the endpoint's name plus a timestamp."""
    stamp = dt.datetime.now().strftime(_STAMP_FORMAT)
    return f"{endpoint[:MAX_NAME - len(stamp) - 1]}-{stamp}"


def create_model_and_config(client: Client, model: dict[str, Any],
                            config: dict[str, Any]) -> None:
    """CreateModel and CreateEndpointConfig; when the config is refused, the model goes too."""
    client.call("CreateModel", **model)
    try:
        client.call("CreateEndpointConfig", **config)
    except ShipyardError:
        client.call("DeleteModel", ModelName=model["ModelName"])
        raise


@click.command()
@click.argument("image")
@click.option("--model-data", help="ModelDataUrl: s3://, file://, or a local model.tar.gz or "
              "folder, mounted at /opt/ml/model.")
@click.option("--name", help="Endpoint name (default: image name + timestamp). The model and "
              "endpoint config are named after it.")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE",
              help="Container environment. Repeatable.")
@click.option("--instance-count", default=1, show_default=True, type=int)
@click.option("--instance-type", default="local", show_default=True,
              help="local or an ml.* type (its CPU and memory limits apply).")
@click.option("--variant", default="AllTraffic", show_default=True, help="Variant name.")
@click.option("--update", is_flag=True, help="Deploy to the existing endpoint NAME: a new "
              "fleet starts beside the old one and takes the traffic once healthy (blue/green).")
@click.option("--no-wait", is_flag=True, help="Return once the endpoint is being created.")
@click.pass_obj
def deploy(settings: Settings, image: str, model_data: str | None, name: str | None,
           envs: tuple[str, ...], instance_count: int, instance_type: str, variant: str,
           update: bool, no_wait: bool) -> None:
    """Serve IMAGE (`docker run IMAGE serve`) behind a real-time endpoint.

    Creates a model, an endpoint config and the endpoint (CreateModel, CreateEndpointConfig,
    CreateEndpoint; UpdateEndpoint with --update), waits until it is InService and prints how
    to call it. A deployment that fails exits 1 with its FailureReason.
    """
    if update and not name:
        raise CliError("--update needs --name, the endpoint to update", ExitCode.USAGE)
    name = name or default_job_name(image)
    env = pairs(envs, "--env")
    model_url = model_data_uri(model_data) if model_data else None
    client = open_client(settings)
    current = find_endpoint(client, name)
    if update and current is None:
        raise CliError(f"no endpoint named {name} to update (leave out --update to create it)",
                       ExitCode.NOT_FOUND)
    if not update and current is not None:
        raise CliError(f"endpoint {name} already exists: --update deploys {image} to it "
                       "(blue/green), `shipyard endpoints delete` removes it", ExitCode.USAGE)
    resource = _version_name(name) if update else name
    tags = [{"Key": CREATED_BY_TAG, "Value": CREATED_BY_DEPLOY},
            {"Key": ENDPOINT_TAG, "Value": name}]
    container: dict[str, Any] = {"Image": image, "Environment": env}
    if model_url:
        container["ModelDataUrl"] = model_url
    create_model_and_config(client,
            {"ModelName": resource, "PrimaryContainer": container, "Tags": tags,
             "ExecutionRoleArn": f"arn:aws:iam::{settings.account_id}:role/shipyard"},
            {"EndpointConfigName": resource, "Tags": tags, "ProductionVariants": [{
                "VariantName": variant, "ModelName": resource, "InstanceType": instance_type,
                "InitialInstanceCount": instance_count, "InitialVariantWeight": 1.0}]})
    try:
        if current is not None:
            arn = client.call("UpdateEndpoint", EndpointName=name,
                              EndpointConfigName=resource)["EndpointArn"]
        else:
            arn = client.call("CreateEndpoint", EndpointName=name, EndpointConfigName=resource,
                              Tags=tags)["EndpointArn"]
    except ShipyardError:
        remove_deployed(client, name, resource)
        raise
    if no_wait:
        click.echo(arn)
        return
    click.echo(f"Endpoint {name} {'updating' if current else 'created'} ({arn})", err=True)
    follow(client, settings, name, resource,
           None if current is None else current["EndpointConfigName"])


def follow(client: Client, settings: Settings, name: str, resource: str,
           replaced: str | None = None) -> None:
    """Wait until endpoint NAME serves endpoint config ``resource`` (``replaced``: the config
    an update moves off); report a failure (exit 1) or how to invoke it."""
    try:
        record = wait_endpoint(client, name)
    except KeyboardInterrupt:
        raise SystemExit(detached(name, "updating" if replaced else "deploying")) from None
    if record is None:
        raise CliError(f"endpoint {name} was deleted while it deployed", ExitCode.JOB_FAILED)
    deployed = (record["EndpointStatus"] == IN_SERVICE
                and record.get("EndpointConfigName") == resource)
    if not deployed:
        _report_failure(client, settings, name, record, resource, updating=replaced is not None)
        raise SystemExit(ExitCode.JOB_FAILED)
    if replaced is not None:
        # The old fleet is gone; so can be the model and config deploy made for it.
        remove_deployed(client, name, replaced)
    click.secho(f"Endpoint {name}: {IN_SERVICE}", fg="green", err=True)
    click.echo(f"Endpoint: {name}\n"
               f"URL:      {client.endpoint_url(name)}\n"
               f"Invoke:   {cli_prefix(settings)} invoke {name} --file payload.json "
               "--content-type application/json")


def _report_failure(client: Client, settings: Settings, name: str, record: dict[str, Any],
                    resource: str, *, updating: bool) -> None:
    click.secho(f"Endpoint {name}: {'update failed' if updating else record['EndpointStatus']}",
                fg="red", err=True)
    if record.get("FailureReason"):
        click.echo(f"FailureReason: {record['FailureReason']}", err=True)
    if updating:
        # The old fleet kept serving; the new model and config are of no use.
        remove_deployed(client, name, resource)
        click.echo(f"Endpoint {name} keeps serving endpoint config "
                   f"{record.get('EndpointConfigName')}.", err=True)
    else:
        click.echo(f"Remove it with: {cli_prefix(settings)} endpoints delete {name}", err=True)
