"""Shipyard: run SageMaker-style containers anywhere.

Importing any part of this package has no side effects: nothing reads the environment,
creates directories or fixes ``/opt/ml`` paths until a function is called.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
