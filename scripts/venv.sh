# Sourced by demo.sh and test.sh: make .venv with Python 3.11 (or newer) and install EXTRAS into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python=$candidate; break
  fi
done
if [ -z "$python" ]; then
  echo "error: ratekeeper needs Python 3.11 or newer (python3.11 was not found)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    # Debian ships venv separately; as root we can add it, otherwise say what is missing.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      rm -rf .venv && "$python" -m venv .venv
    else
      echo "error: '$python -m venv' failed: install python3-venv (apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
# Pinned, hash-checked dependencies (requirements/*.txt, from `uv pip compile --generate-hashes`),
# then ratekeeper itself.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --require-hashes -r "requirements/${EXTRAS}.txt"
.venv/bin/python -m pip install --quiet --no-deps -e .
