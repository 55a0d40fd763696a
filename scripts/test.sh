#!/usr/bin/env bash
# The whole test suite, after making sure the engine, environment and base image are ready.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
