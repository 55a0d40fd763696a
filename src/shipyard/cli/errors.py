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
    """A user-facing failure; click prints ``Error: <message>`` and exits with ``code``."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code
        # click declares exit_code on the class; each error carries its own.
        setattr(self, "exit_code", int(code))  # noqa: B010


def from_shipyard(exc: ShipyardError) -> CliError:
    if isinstance(exc, ResourceNotFound):
        return CliError(str(exc), ExitCode.NOT_FOUND)
    if isinstance(exc, ValidationError):
        if str(exc) == "Requested resource not found.":
            return CliError("no such job", ExitCode.NOT_FOUND)
        return CliError(str(exc), ExitCode.USAGE)
    return CliError(f"{type(exc).__name__}: {exc}", ExitCode.PLATFORM)
