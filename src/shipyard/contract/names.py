"""AWS's wording for a broken constraint, and the one value rule SageMaker's model misses.

The name rules themselves (lengths, patterns) are botocore's model's, checked at the control
plane's door (``shipyard.control.shapes``); what is here serves the checks the model cannot
express.
"""

from __future__ import annotations

from shipyard.errors import ValidationError


def constraint_error(value: object, member: str, constraint: str) -> ValidationError:
    """AWS's wording: ``1 validation error detected: Value 'x' at 'member' failed to ...``."""
    return ValidationError(f"1 validation error detected: Value '{value}' at '{member}' failed "
                           f"to satisfy constraint: {constraint}")


def check_env_value(key: str, value: str) -> str:
    """A value a process environment can hold: C strings end at NUL, so an engine refuses
    it at start (exit code 128) long after the request was accepted. The models' pattern,
    ``[\\S\\s]*``, lets it through."""
    if "\x00" in value:
        raise ValidationError(f"Environment value of {key} contains a NUL character, which no "
                              "process environment can hold")
    return value
