#!/usr/bin/env bash
# Set up everything on a fresh machine (a venv and the project) and start the bot.
# Settings come from the environment and .env (see .env.example); DISCORD_TOKEN is required.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q -e ".${EXTRAS:-}"
exec python -m bot "$@"
