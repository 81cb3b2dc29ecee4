#!/usr/bin/env bash
# Install the dev dependencies (and, as root, PostgreSQL) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL for the registry contract suite ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
fi
# A real browser for the page tests (the Python playwright package drives the system Chromium;
# never `playwright install`).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Chromium for the browser tests ..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# Containers and Kubernetes manifests: podman builds and runs the image (tests/test_container_image.py,
# with a local Debian base made by debootstrap: no public image registry is needed); kubectl renders
# the Kustomize overlays offline. A fresh machine gets them here; elsewhere those tests skip.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=""
  for tool in podman buildah runc debootstrap kubectl; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing="$missing $tool"
  done
  if [ -n "$missing" ]; then
    echo "installing$missing for the container and Kubernetes tests ..."
    apt-get update -qq
    for tool in $missing; do  # one by one: kubectl needs the Kubernetes (or Google Cloud) source
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null ||
        echo "warning: could not install $tool: the tests that need it will skip" >&2
    done
  fi
fi
# Where PostgreSQL is installed, its tests must run: a server that cannot start is a failure.
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  export RATEKEEPER_REQUIRE_POSTGRES=1
fi

EXTRAS=dev source scripts/venv.sh
exec .venv/bin/python -m pytest "$@"
