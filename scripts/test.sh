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
# Where PostgreSQL is installed, its tests must run: a server that cannot start is a failure.
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  export RATEKEEPER_REQUIRE_POSTGRES=1
fi

EXTRAS=dev source scripts/venv.sh
exec .venv/bin/python -m pytest "$@"
