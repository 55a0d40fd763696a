"""``shipyard``: a thin client of the control plane. One module per command group."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click

from shipyard import __version__
from shipyard.cli.errors import CliError, ExitCode, from_shipyard
from shipyard.errors import ShipyardError
from shipyard.settings import Settings

__all__ = ["main"]

_HELP = {
    "data_dir": "State, logs and job folders [env SHIPYARD_DATA_DIR; default ~/.shipyard].",
    "runtime": "auto, docker or process [env SHIPYARD_RUNTIME].",
    "s3_endpoint_url": "S3-compatible endpoint for s3:// URIs [env SHIPYARD_S3_ENDPOINT_URL].",
    "s3_access_key_id": "Access key for the S3 endpoint [env SHIPYARD_S3_ACCESS_KEY_ID].",
    "s3_secret_access_key": "Secret key for the S3 endpoint [env SHIPYARD_S3_SECRET_ACCESS_KEY].",
    "embedded_s3": "shipyard server runs an S3 store when s3_endpoint_url names none "
    "[env SHIPYARD_EMBEDDED_S3; default true].",
    "s3_port": "Loopback port of the embedded S3 store; 0 picks a free one "
    "[env SHIPYARD_S3_PORT; default 8778].",
    "region": "Region used in ARNs and for S3 [env SHIPYARD_REGION].",
    "account_id": "Account id used in ARNs [env SHIPYARD_ACCOUNT_ID].",
    "stop_grace_seconds": "SIGTERM-to-SIGKILL grace on stop [env SHIPYARD_STOP_GRACE_SECONDS].",
    "transfer_workers": "Concurrent S3 transfers per job [env SHIPYARD_TRANSFER_WORKERS].",
    "scope": "Extra org.shipyard.scope label on containers and networks [env SHIPYARD_SCOPE].",
    "api_host": "Address the API server listens on [env SHIPYARD_API_HOST].",
    "api_port": "Port of the API server [env SHIPYARD_API_PORT; default 8777].",
    "remove_containers": "Remove containers once a job ends [env SHIPYARD_REMOVE_CONTAINERS].",
    "endpoint_startup_timeout_seconds": "Time an endpoint's container has to pass /ping "
    "[env SHIPYARD_ENDPOINT_STARTUP_TIMEOUT_SECONDS].",
    "invoke_max_payload_bytes": "Largest InvokeEndpoint body "
    "[env SHIPYARD_INVOKE_MAX_PAYLOAD_BYTES].",
    "invoke_timeout_seconds": "Time a model has to answer an invocation "
    "[env SHIPYARD_INVOKE_TIMEOUT_SECONDS].",
    "file_roots": "Host folders file:// locations may name, separated by ':' or ',' "
    "[env SHIPYARD_FILE_ROOTS; default your home and the temporary folder].",
    "refuse_missing_gpu": "Refuse GPU instance types where no GPU is available, instead of "
    "running them on CPU [env SHIPYARD_REFUSE_MISSING_GPU].",
}


def _settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One global option per setting, generated from the settings model (declared once)."""
    for f in reversed([f for f in fields(Settings) if f.name != "sources"]):
        flag = "--" + f.name.replace("_", "-")
        func = click.option(flag, f.name, default=None, help=_HELP.get(f.name, ""))(func)
    return func


class ShipyardGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShipyardError as exc:
            raise from_shipyard(exc) from exc


@click.group(cls=ShipyardGroup)
@click.version_option(__version__, prog_name="shipyard")
@_settings_options
@click.pass_context
def cli(ctx: click.Context, /, **overrides: Any) -> None:
    """Run SageMaker-style containers anywhere."""
    try:
        ctx.obj = Settings.load(overrides)
    except ShipyardError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from exc


@cli.group("config")
def config_group() -> None:
    """Inspect settings."""


@config_group.command("show")
@click.pass_obj
def config_show(settings: Settings) -> None:
    """Every setting with its value and where it came from."""
    click.echo(json.dumps(settings.explain(), indent=2))


def _register() -> None:
    from shipyard.cli import (
        build,
        check,
        cluster,
        deploy,
        endpoints,
        invoke,
        jobs,
        models,
        process,
        s3,
        server,
        train,
        transform,
        tune,
    )

    cli.add_command(build.build)
    cli.add_command(check.check)
    cli.add_command(train.train)
    cli.add_command(process.process)
    cli.add_command(jobs.jobs)
    cli.add_command(deploy.deploy)
    cli.add_command(endpoints.endpoints)
    cli.add_command(invoke.invoke)
    cli.add_command(transform.transform)
    cli.add_command(tune.tune)
    cli.add_command(tune.tuning)
    cli.add_command(models.models)
    cli.add_command(server.server)
    cli.add_command(s3.s3)
    cli.add_command(cluster.cluster)


_register()


def main() -> None:
    cli(prog_name="shipyard")
