"""``shipyard check IMAGE``: the image against SageMaker's container contract.

Exit status: 0 when no check fails (warnings and skips included; ``--strict`` fails on
warnings too), 1 when a check fails, 2 for bad usage, 4 when the engine is unusable.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from shipyard.check import (
    CHECKS,
    CheckOptions,
    Payload,
    ProcessingInput,
    Status,
    Timeouts,
    render_json,
    render_junit,
    render_table,
    run_checks,
)
from shipyard.cli.errors import CliError, ExitCode, from_shipyard
from shipyard.cli.parsing import pairs, split_command
from shipyard.contract.labels import SCOPE_LABEL
from shipyard.errors import ImageNotFound, ShipyardError
from shipyard.settings import Settings

__all__ = ["check"]


def _timeout_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """One ``--<name>-timeout``-style option per :class:`Timeouts` field (declared once)."""
    for f in reversed(dataclasses.fields(Timeouts)):
        flag = "--" + f.name.replace("_", "-")
        if not flag.endswith(("grace", "after")):
            flag += "-timeout"
        func = click.option(flag, "timeout_" + f.name, type=float, default=None,
                            help=f"{f.metadata['help']} [default {f.default:g}]")(func)
    return func


def _folders(values: tuple[str, ...], what: str) -> dict[str, Path]:
    out = {}
    for key, value in pairs(values, what).items():
        path = Path(value).expanduser()
        if not path.is_dir():
            raise CliError(f"{what} {key}={value}: not a folder", ExitCode.USAGE)
        out[key] = path
    return out


def _processing_inputs(values: tuple[str, ...]) -> tuple[ProcessingInput, ...]:
    items = []
    for source, dest in pairs(values, "--processing-input (HOST_DIR=/opt/ml/processing/...)"
                              ).items():
        path = Path(source).expanduser()
        if not path.exists():
            raise CliError(f"--processing-input {source}: no such file or folder",
                           ExitCode.USAGE)
        items.append(ProcessingInput(path, dest))
    return tuple(items)


def _payload(path: str | None, content_type: str, accept: str) -> Payload | None:
    return Payload.from_file(Path(path), content_type, accept) if path else None


def _labels(ctx: click.Context, values: tuple[str, ...]) -> dict[str, str]:
    """``--label`` values, plus the settings' scope label under ``shipyard`` (so cleanup by
    scope finds the check's containers as it finds every other Shipyard container)."""
    labels = pairs(values, "--label")
    settings = ctx.find_object(Settings)
    if settings is not None and settings.scope and SCOPE_LABEL not in labels:
        labels[SCOPE_LABEL] = settings.scope
    return labels


@click.command("check")
@click.argument("image")
@click.option("--train", "train", flag_value=True, default=None,
              help="Run the training checks (default: inferred from the image).")
@click.option("--serve", "serve", flag_value=True, default=None,
              help="Run the serving checks (default: inferred from the image).")
@click.option("--process", "process", flag_value=True, default=None,
              help="Run the processing check.")
@click.option("--static-only", is_flag=True, help="Only read the image; run nothing.")
@click.option("--skip", multiple=True, metavar="CHECK", help="Skip a check by id (repeatable).")
@click.option("--channel", multiple=True, metavar="NAME=DIR",
              help="Training fixture channel (repeatable) [default: a small CSV in "
                   "'training'].")
@click.option("--hyperparameter", "-p", multiple=True, metavar="KEY=VALUE",
              help="Training fixture hyperparameter (repeatable).")
@click.option("--bad-channel", multiple=True, metavar="NAME=DIR",
              help="A broken channel for train-failure-file [default: garbage bytes].")
@click.option("--bad-hyperparameter", multiple=True, metavar="KEY=VALUE",
              help="A hyperparameter that breaks training, for train-failure-file.")
@click.option("--slow-hyperparameter", multiple=True, metavar="KEY=VALUE",
              help="Hyperparameters that keep training busy well past SIGTERM, for "
                   "train-sigterm.")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE",
              help="Environment for every container (repeatable).")
@click.option("--model", type=click.Path(exists=True, path_type=Path),
              help="Model served (folder or .tar.gz) [default: the one train-completes "
                   "wrote].")
@click.option("--payload", type=click.Path(exists=True, dir_okay=False),
              help="Sample /invocations body.")
@click.option("--content-type", default="application/json", show_default=True,
              help="Content-Type of the payloads.")
@click.option("--accept", default="", help="Accept header of the payloads.")
@click.option("--slow-payload", type=click.Path(exists=True, dir_okay=False),
              help="A body that takes a while to answer, for serve-sigterm-drain.")
@click.option("--processing-input", multiple=True, metavar="HOST_PATH=/opt/ml/processing/...",
              help="Processing input (repeatable).")
@click.option("--processing-output", multiple=True, metavar="/opt/ml/processing/...",
              help="Processing output that must be written (repeatable).")
@click.option("--processing-entrypoint", metavar="COMMAND",
              help="ContainerEntrypoint of the processing run (shell words).")
@click.option("--processing-arg", multiple=True, metavar="ARG",
              help="ContainerArguments of the processing run (repeatable).")
@click.option("--max-size-gb", type=float, default=10.0, show_default=True,
              help="Warn when the image is larger.")
@_timeout_options
@click.option("--label", multiple=True, metavar="KEY=VALUE",
              help="Label on every container the checks start (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report as JUnit XML to this file.")
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@click.pass_context
def check(ctx: click.Context, /, image: str, **kw: Any) -> None:
    """Check IMAGE against SageMaker's container contract.

    Static checks read the image config and layers; dynamic checks run it as SageMaker
    training, hosting and processing would. Which dynamic checks run is inferred from the
    image (PATH, labels) unless --train/--serve/--process say. Exit status 1 when a check
    fails. Every check and the rule it enforces: docs/check.md.
    """
    unknown = sorted(set(kw["skip"]) - set(CHECKS))
    if unknown:
        raise CliError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}",
                       ExitCode.USAGE)
    timeouts = Timeouts(**{
        f.name: kw[f"timeout_{f.name}"] for f in dataclasses.fields(Timeouts)
        if kw[f"timeout_{f.name}"] is not None})
    try:
        options = CheckOptions(
            train=kw["train"], serve=kw["serve"], process=kw["process"],
            static_only=kw["static_only"], skip=frozenset(kw["skip"]),
            channels=_folders(kw["channel"], "--channel"),
            hyperparameters=pairs(kw["hyperparameter"], "--hyperparameter"),
            bad_channels=_folders(kw["bad_channel"], "--bad-channel"),
            bad_hyperparameters=pairs(kw["bad_hyperparameter"], "--bad-hyperparameter"),
            slow_hyperparameters=pairs(kw["slow_hyperparameter"], "--slow-hyperparameter"),
            env=pairs(kw["env"], "--env"),
            model=kw["model"],
            payload=_payload(kw["payload"], kw["content_type"], kw["accept"]),
            slow_payload=_payload(kw["slow_payload"], kw["content_type"], kw["accept"]),
            processing_inputs=_processing_inputs(kw["processing_input"]),
            processing_outputs=tuple(kw["processing_output"]),
            processing_entrypoint=tuple(split_command(kw["processing_entrypoint"]) or ()),
            processing_arguments=tuple(kw["processing_arg"]),
            max_size_bytes=int(kw["max_size_gb"] * 1000**3),
            timeouts=timeouts,
            labels=_labels(ctx, kw["label"]),
        )
        report = run_checks(image, options)
    except ImageNotFound as exc:
        raise CliError(str(exc), ExitCode.NOT_FOUND) from exc
    except ShipyardError as exc:
        raise from_shipyard(exc) from exc
    junit: Path | None = kw["junit"]
    if junit is not None:
        junit.write_text(render_junit(report), encoding="utf-8")
    if kw["as_json"]:
        click.echo(render_json(report))
    else:
        width = shutil.get_terminal_size((100, 24)).columns
        # click.echo drops the colours when stdout is not a terminal.
        click.echo(render_table(report, width=max(width, 60), color=True), color=ctx.color)
    failed = report.failed or (kw["strict"] and bool(report.with_status(Status.WARN)))
    if failed:
        ctx.exit(int(ExitCode.JOB_FAILED))
