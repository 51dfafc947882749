#!/usr/bin/env bash
# Set up everything on a fresh machine (a venv, CPU torch, the project with its test extra) and run
# lint and the tests. Offline for models: the tests use the built-in `tiny` model.
set -euo pipefail
cd "$(dirname "$0")/.."
# PostgreSQL from Debian's packages for the scale-out store's tests (they start their own server).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# The CPU build of torch (a file on this kind of machine's disk); GPU users install their own.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[test,postgres,ray]"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check .
ruff format --check .
mypy generation bot jobs storage bench tests testkit
python -m pytest "$@"
