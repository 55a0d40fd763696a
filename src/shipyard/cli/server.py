"""``shipyard server``: run the API server in the foreground, or manage the background one."""

from __future__ import annotations

import click

from shipyard.api.credentials import client_env, load_or_create
from shipyard.cli.errors import CliError, ExitCode
from shipyard.settings import Settings


def _print_usage(settings: Settings, url: str) -> None:
    akid, secret = load_or_create(settings.data_dir).default
    env = client_env(akid, secret, url, settings.region)
    # Per-service endpoints rather than AWS_ENDPOINT_URL: Shipyard does not serve S3, and the
    # SDK's S3 calls must reach the S3-compatible store the jobs read from.
    del env["AWS_ENDPOINT_URL"]
    for service in ("SAGEMAKER", "SAGEMAKER_RUNTIME", "CLOUDWATCH_LOGS", "STS"):
        env[f"AWS_ENDPOINT_URL_{service}"] = url
    if settings.s3_endpoint_url:
        env["AWS_ENDPOINT_URL_S3"] = settings.s3_endpoint_url
    click.echo(f"Shipyard API listening on {url}", err=True)
    click.echo("Point boto3 and the SageMaker SDK at it with:", err=True)
    for key, value in env.items():
        click.echo(f"  export {key}={value}", err=True)


@click.group(invoke_without_command=True)
@click.option("--host", default=None, help="Listen address (default: setting api_host).")
@click.option("--port", default=None, type=int, help="Port (default: setting api_port).")
@click.pass_context
def server(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the SageMaker-compatible API server in the foreground (Ctrl-C stops it)."""
    if ctx.invoked_subcommand is not None:
        return
    # The server module loads the control plane: only commands that need it pay for it.
    from shipyard.api.server import healthy, read_info, serve

    settings: Settings = ctx.obj
    info = read_info(settings)
    if info is not None and healthy(info.url):
        raise CliError(f"a server for {settings.data_dir} already runs at {info.url} "
                       f"(pid {info.pid}); stop it with: shipyard server stop", ExitCode.USAGE)
    serve(settings, host=host, port=port, ready=lambda url: _print_usage(settings, url))


@server.command("status")
@click.pass_obj
def status(settings: Settings) -> None:
    """Where the server of this data directory listens, and how to use it."""
    from shipyard.api.server import healthy, read_info

    info = read_info(settings)
    if info is None or not healthy(info.url):
        raise CliError("no server is running for this data directory", ExitCode.NOT_FOUND)
    _print_usage(settings, info.url)


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
