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
# systemd-analyze, for the systemd unit's check (tests/test_deploy.py).
if ! command -v systemd-analyze >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
VENV="${VENV:-.venv}"
# docker-compose (v1, from PyPI) for the compose file's check, in a venv of its own: it pins
# python-dotenv<1 and PyYAML<6 (whose sdist builds on Python 3.11 only with Cython<3).
COMPOSE_VENV="${COMPOSE_VENV:-.venv-compose}"
if [ ! -x "$COMPOSE_VENV/bin/docker-compose" ]; then
    python3 -m venv "$COMPOSE_VENV"
    "$COMPOSE_VENV/bin/pip" install -q "cython<3" wheel setuptools
    "$COMPOSE_VENV/bin/pip" install -q --no-build-isolation "PyYAML==5.4.1"
    "$COMPOSE_VENV/bin/pip" install -q "docker-compose==1.29.2"
fi
export DOCKER_COMPOSE="$(cd "$COMPOSE_VENV" && pwd)/bin/docker-compose"
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
