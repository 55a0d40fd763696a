"""``shipyard server``: run the API server in the foreground, or manage the background one."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

import click

from shipyard.api import sdk_defaults
from shipyard.api.credentials import client_env, load_or_create
from shipyard.cli.errors import CliError, ExitCode
from shipyard.settings import Settings

if TYPE_CHECKING:
    from shipyard.api.server import ServerInfo


def usage_env(settings: Settings, info: ServerInfo) -> dict[str, str]:
    """The variables that point boto3 and the SageMaker SDK at the server and its S3 store."""
    akid, secret = load_or_create(settings.data_dir).default
    env = client_env(akid, secret, info.url, settings.region)
    # Per-service endpoints rather than AWS_ENDPOINT_URL: S3 is another server (the one
    # `shipyard server` runs, or the one the settings name).
    del env["AWS_ENDPOINT_URL"]
    for service in ("SAGEMAKER", "SAGEMAKER_RUNTIME", "CLOUDWATCH_LOGS", "STS"):
        env[f"AWS_ENDPOINT_URL_{service}"] = info.url
    s3_url = info.s3_url or settings.s3_endpoint_url
    if s3_url:
        env["AWS_ENDPOINT_URL_S3"] = s3_url
    # The SDK's defaults (role, bucket, no telemetry): the server writes them at start.
    defaults = sdk_defaults.path(settings)
    if defaults.is_file():
        env[sdk_defaults.ENV_VAR] = str(defaults)
    return env


def console_link(settings: Settings, info: ServerInfo) -> str:
    """A one-time login URL for the web console (``shipyard.console``), signed with the
    server's default key."""
    from shipyard.console.auth import login_link

    akid, secret = load_or_create(settings.data_dir).default
    return login_link(info.url, akid, secret)


def _print_usage(settings: Settings, info: ServerInfo) -> None:
    """``export`` lines on standard output, so ``eval "$(shipyard server status)"`` sets
    them; notes for people on standard error."""
    click.echo(f"Shipyard API listening on {info.url}", err=True)
    if info.s3_error:
        click.echo(f"the S3 store did not start: {info.s3_error}", err=True)
    elif not (info.s3_url or settings.s3_endpoint_url):
        click.echo("no S3 store: s3:// locations go to AWS's S3", err=True)
    else:
        click.echo(f"S3 store at {info.s3_url or settings.s3_endpoint_url}", err=True)
    click.echo('Point boto3 and the SageMaker SDK at it: eval "$(shipyard server status)"',
               err=True)
    click.echo(f"Web console (this link logs a browser in once): {console_link(settings, info)}",
               err=True)
    for key, value in usage_env(settings, info).items():
        click.echo(f"export {key}={shlex.quote(value)}")


@click.group(invoke_without_command=True)
@click.option("--host", default=None, help="Listen address (default: setting api_host).")
@click.option("--port", default=None, type=int, help="Port (default: setting api_port).")
@click.pass_context
def server(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the SageMaker-compatible API server in the foreground (Ctrl-C stops it)."""
    if ctx.invoked_subcommand is not None:
        return
    # The server module loads the control plane: only commands that need it pay for it.
    from shipyard.api.server import ServerInfo, healthy, read_info, serve

    settings: Settings = ctx.obj
    info = read_info(settings)
    if info is not None and healthy(info.url):
        raise CliError(f"a server for {settings.data_dir} already runs at {info.url} "
                       f"(pid {info.pid}); stop it with: shipyard server stop", ExitCode.USAGE)

    def ready(url: str) -> None:
        _print_usage(settings, read_info(settings) or ServerInfo(url=url, pid=0))

    serve(settings, host=host, port=port, ready=ready)


@server.command("status")
@click.pass_obj
def status(settings: Settings) -> None:
    """Where the server of this data directory listens, and how to use it."""
    from shipyard.api.server import healthy, read_info

    info = read_info(settings)
    if info is None or not healthy(info.url):
        raise CliError("no server is running for this data directory", ExitCode.NOT_FOUND)
    _print_usage(settings, info)


@server.command("stop")
@click.pass_obj
def stop(settings: Settings) -> None:
    """Stop the server of this data directory (its jobs' containers keep running)."""
    from shipyard.api.server import stop_server

    report = stop_server(settings)
    if report is None:
        raise CliError("no server is running for this data directory", ExitCode.NOT_FOUND)
    if not report.graceful:
        click.echo("the server did not stop in time and was killed; work it had under way "
                   "is finished by the next server on this data directory", err=True)
        return
    click.echo("server stopped", err=True)
    for line in report.left:
        click.echo(f"  unfinished: {line}", err=True)
    if report.left:
        click.echo("the next server on this data directory finishes these (any shipyard "
                   "command starts one)", err=True)
