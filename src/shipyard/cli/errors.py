"""CLI exit codes, one place, and the translation of Shipyard errors into them."""

from __future__ import annotations

from enum import IntEnum

import click

from shipyard.errors import ResourceNotFound, ShipyardError, ValidationError


class ExitCode(IntEnum):
    OK = 0
    JOB_FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    PLATFORM = 4
    JOB_STOPPED = 5


class CliError(click.ClickException):
    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = int(exit_code)


def from_shipyard(exc: ShipyardError) -> CliError:
    if isinstance(exc, ResourceNotFound):
        return CliError(str(exc), ExitCode.NOT_FOUND)
    if isinstance(exc, ValidationError):
        if str(exc) == "Requested resource not found.":
            return CliError("no such job", ExitCode.NOT_FOUND)
        return CliError(str(exc), ExitCode.USAGE)
    return CliError(f"{type(exc).__name__}: {exc}", ExitCode.PLATFORM)
