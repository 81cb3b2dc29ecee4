#!/usr/bin/env bash
# Make a local Debian bookworm base image with Python 3.11, for building the Dockerfile where no
# public image registry is reachable (python:3.11-slim cannot be pulled):
#
#   scripts/base-image.sh                       # prints the image name
#   podman build --build-arg BASE_IMAGE=localhost/ratekeeper-base:bookworm ...
#
# debootstrap --variant=minbase took 2.5 minutes here; the root filesystem is kept as a tarball
# under /var/tmp (else $TMPDIR), so a later run or a fresh podman store imports it in seconds.
set -euo pipefail

IMAGE=${RATEKEEPER_BASE_IMAGE:-localhost/ratekeeper-base:bookworm}
SPOOL=/var/tmp
[ -d "$SPOOL" ] && [ -w "$SPOOL" ] || SPOOL=${TMPDIR:-/tmp}
CACHE=${RATEKEEPER_BASE_CACHE:-$SPOOL/ratekeeper-base-bookworm.tar}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if podman image exists "$IMAGE"; then
  echo "$IMAGE"
  exit 0
fi
if [ ! -s "$CACHE" ]; then
  root=$(mktemp -d "$SPOOL/ratekeeper-base.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  # python3-venv: `python3 -m venv` (Debian ships ensurepip apart); ca-certificates: HTTPS to S3.
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR" >&2
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$CACHE.partial" .
  mv "$CACHE.partial" "$CACHE"
fi
podman import --change 'CMD ["python3"]' "$CACHE" "$IMAGE" >&2
echo "$IMAGE"
