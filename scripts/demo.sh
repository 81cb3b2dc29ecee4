#!/usr/bin/env bash
# Install ratekeeper into .venv and run the demo on the embedded registry (./.ratekeeper).
set -euo pipefail
EXTRAS=train source "$(dirname "$0")/venv.sh"
exec .venv/bin/ratekeeper demo "$@"
