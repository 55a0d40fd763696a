#!/usr/bin/env bash
# Build the Debian bookworm + Python 3.11 base image from Debian's archive, once.
# No container registry is reachable here, so the image is made with debootstrap and
# imported; Python 3.11 matches the host's cp311 ABI, so host-built wheels install in it.
set -euo pipefail
TAG="${SHIPYARD_BASE_IMAGE:-shipyard/base:bookworm-py311}"
LABEL="org.shipyard.managed=true"
if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG present"
  exit 0
fi
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
ROOTFS="$(mktemp -d /tmp/shipyard-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$ROOTFS" http://deb.debian.org/debian >/tmp/shipyard-debootstrap.log 2>&1 \
  || { tail -20 /tmp/shipyard-debootstrap.log; exit 1; }
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import \
  --change "LABEL $LABEL" \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1' \
  - "$TAG" >/dev/null
echo "base image $TAG built"
