"""``shipyard invoke``: one request to an endpoint (sagemaker-runtime InvokeEndpoint); the
answer's body goes to stdout as it is, byte for byte."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shipyard.cli.endpoints import not_found_exits
from shipyard.cli.errors import CliError, ExitCode
from shipyard.cli.output import open_client
from shipyard.client import Invocation
from shipyard.errors import ModelError
from shipyard.settings import Settings

DEFAULT_CONTENT_TYPE = "application/json"
#: A --file's suffix -> the Content-Type sent when none is given.
CONTENT_TYPES = {".json": "application/json", ".jsonl": "application/jsonlines",
                 ".csv": "text/csv", ".txt": "text/plain", ".npy": "application/x-npy",
                 ".npz": "application/x-npz"}


def _payload(body: str | None, path: str | None) -> bytes:
    if body is not None and path is not None:
        raise CliError("give either --body or --file, not both", ExitCode.USAGE)
    if body is not None:
        return body.encode()
    if path is not None and path != "-":
        return Path(path).read_bytes()
    if path is None and sys.stdin.isatty():
        raise CliError("no payload: give --body TEXT, --file PATH, or pipe it on stdin "
                       "(--file -)", ExitCode.USAGE)
    return sys.stdin.buffer.read()


def _content_type(given: str | None, path: str | None) -> str:
    if given:
        return given
    suffix = Path(path).suffix.lower() if path and path != "-" else ""
    return CONTENT_TYPES.get(suffix, DEFAULT_CONTENT_TYPE)


@click.command()
@click.argument("name")
@click.option("--body", help="The payload, as text.")
@click.option("--file", "path", metavar="PATH",
              type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="Read the payload from PATH ('-': stdin, also the default when stdin is "
              "not a terminal).")
@click.option("--content-type", help="Content-Type of the payload [default: from --file's "
              f"suffix (.csv: text/csv, ...), else {DEFAULT_CONTENT_TYPE}].")
@click.option("--accept", help="Accept: the content type wanted back.")
@click.option("--target-variant", help="Send to this production variant, not one by weight.")
@click.option("--target-model", help="Multi-model endpoints: the model to run (its path "
              "below the endpoint's model prefix, e.g. model-a.tar.gz).")
@click.option("--custom-attributes", help="X-Amzn-SageMaker-Custom-Attributes, passed to the "
              "container as is.")
@click.option("--stream", is_flag=True, help="InvokeEndpointWithResponseStream: print the "
              "answer's parts as they arrive.")
@click.option("-v", "--verbose", is_flag=True, help="Print the invoked variant, the answer's "
              "content type and custom attributes on stderr.")
@click.pass_obj
def invoke(settings: Settings, name: str, body: str | None, path: str | None,
           content_type: str | None, accept: str | None, target_variant: str | None,
           target_model: str | None, custom_attributes: str | None, stream: bool,
           verbose: bool) -> None:
    """Send a payload to endpoint NAME and print the answer's body on stdout.

    Exit codes: 1 when the model answered an error (ModelError: the message goes to stderr),
    3 when there is no such endpoint.
    """
    if stream and target_model:
        raise CliError("--target-model is not part of a streamed invocation", ExitCode.USAGE)
    payload = _payload(body, path)
    headers = {"ContentType": _content_type(content_type, path)}
    for key, value in (("Accept", accept), ("TargetVariant", target_variant),
                       ("TargetModel", target_model), ("CustomAttributes", custom_attributes)):
        if value is not None:
            headers[key] = value
    client = open_client(settings)
    out = sys.stdout.buffer
    last = b""
    try:
        with not_found_exits():
            if stream:
                answer = client.invoke_stream(name, payload, **headers)
                if verbose:
                    _describe(answer)
                for chunk in answer.chunks:
                    out.write(chunk)
                    out.flush()
                    last = chunk
            else:
                answer = client.invoke(name, payload, **headers)
                if verbose:
                    _describe(answer)
                out.write(answer.body)
                last = answer.body
    except ModelError as exc:
        raise CliError(str(exc), ExitCode.JOB_FAILED) from exc
    # A terminal gets its prompt back on a line of its own; a pipe gets the bytes unchanged.
    if last and not last.endswith(b"\n") and out.isatty():
        out.write(b"\n")
    out.flush()


def _describe(answer: Invocation) -> None:
    click.echo(f"Invoked variant: {answer.variant}", err=True)
    click.echo(f"Content-Type: {answer.content_type}", err=True)
    if answer.custom_attributes:
        click.echo(f"Custom attributes: {answer.custom_attributes}", err=True)
