"""CloudWatch's error codes, as the metrics layer raises them.

CloudWatch answers bad input under codes of its own, not SageMaker's ``ValidationException``
(botocore's model of ``monitoring``, the shapes each operation lists): each class here is a
``ValidationError`` (bad input, 400) carrying CloudWatch's code, and the API writes it in the
envelope of the protocol the request came in (``api.cloudwatch``).

    ValidationError (shipyard.errors)
     ├── InvalidParameterValue        InvalidParameterValue        a value out of range or form
     ├── MissingParameter             MissingParameter             a required member absent
     ├── InvalidParameterCombination  InvalidParameterCombination  members that exclude others
     ├── InvalidNextToken             InvalidNextToken             a token from another request
     └── MetricsValidationError       ValidationError              the model's constraints, and
                                                                   what Shipyard does not support
"""

from __future__ import annotations

from shipyard.errors import ValidationError

__all__ = ["InvalidNextToken", "InvalidParameterCombination", "InvalidParameterValue",
           "MetricsValidationError", "MissingParameter"]


class InvalidParameterValue(ValidationError):
    code = "InvalidParameterValue"


class MissingParameter(ValidationError):
    code = "MissingParameter"


class InvalidParameterCombination(ValidationError):
    code = "InvalidParameterCombination"


class InvalidNextToken(ValidationError):
    code = "InvalidNextToken"


class MetricsValidationError(ValidationError):
    """CloudWatch's code for a request that breaks its model (``N validation errors
    detected: ...``) and, here, for what Shipyard refuses rather than answer wrongly."""

    code = "ValidationError"
