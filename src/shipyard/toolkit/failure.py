"""The success and failure files, and the text that explains a failure.

Rules implemented (AWS "How Amazon SageMaker Processes Training Output";
sagemaker-training-toolkit ``trainer.train``, ``errors._CalledProcessError``, PR #118):
- exit code 0 -> Completed, anything else -> Failed; an empty ``/opt/ml/output/success`` on
  success;
- the first 1,024 characters of ``/opt/ml/output/failure`` become ``FailureReason``, so the
  most useful facts come first: the error class and exit code, then the last stderr line
  (usually the exception), then the command, then the stderr tail;
- a failure file the user wrote is never overwritten (#111);
- exit code 137 is a SIGKILL, which in a container almost always means the memory limit:
  AWS adds ``OutOfMemory: Process killed by SIGKILL (signal 9)``.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Sequence
from pathlib import Path

from shipyard.errors import ShipyardError

OOM_NOTE = "OutOfMemory: Process killed by SIGKILL (signal 9)"
USER_ERROR = "ExecuteUserScriptError"


def signal_note(returncode: int) -> str | None:
    """A human note for statuses above 128 (signal deaths); the OOM note for 137."""
    if returncode == 128 + signal.SIGKILL:
        return OOM_NOTE
    if 128 < returncode < 128 + 65:
        try:
            name = signal.Signals(returncode - 128).name
        except ValueError:
            return None
        return f"Process killed by {name} (signal {returncode - 128})"
    return None


def describe_exit(
    headline: str, returncode: int, command: Sequence[str], stderr_tail: Sequence[str]
) -> str:
    """``<headline> exited with code N``, the signal note, the last stderr line, the command
    and the stderr tail: the body of a failure text, without its error class."""
    lines = [f"{headline} exited with code {returncode}"]
    note = signal_note(returncode)
    if note:
        lines.append(note)
    if stderr_tail:
        lines.append(f"ErrorMessage: {stderr_tail[-1].strip()}")
    lines.append(f"Command: {shlex.join(command)}")
    if stderr_tail:
        lines.append(f"Last {len(stderr_tail)} lines of stderr:")
        lines.extend(stderr_tail)
    return "\n".join(lines)


def describe_user_failure(
    returncode: int, command: Sequence[str], stderr_tail: Sequence[str]
) -> str:
    """``ExecuteUserScriptError: the entry point exited with code 3`` + details."""
    return f"{USER_ERROR}: {describe_exit('the entry point', returncode, command, stderr_tail)}\n"


def describe_toolkit_error(exc: ShipyardError) -> str:
    """``EntryPointError: ...``: a problem found before or while starting the user's code."""
    return f"{type(exc).__name__}: {exc}\n"


def write_failure(path: Path, text: str) -> bool:
    """Write the failure file unless it exists; False when one was already there.

    Exclusive creation makes "never overwrite" atomic even if the user's process is still
    writing its own. Errors writing it (read-only mount) are swallowed: the reason still goes
    to stderr, and the exit status still fails the job.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        return False
    except OSError:
        return False
    return True


def write_success(path: Path) -> None:
    """Create the empty success marker (best effort, as the failure file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        pass
