#!/usr/bin/env bash
# The whole GPU run in one command, on a machine with an NVIDIA GPU and no network (see bench/README.md):
#   bash bench/gpu-run.sh [--results FILE] [other `python -m bench gpu` arguments]
# Installs the wheels carried in bench/wheels/ (made by `bash bench/gpu-wheels.sh`) if diffusers is
# missing, then runs `python -m bench gpu` within BUDGET_S seconds (default 480); each figure is in the
# results file (default bench/gpu-results.jsonl) as soon as it is measured. `--dry-run` walks every
# step on the CPU instead (CI runs it so).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-480}"
if ! "$PY" -c "import diffusers" 2>/dev/null; then
    if ! ls bench/wheels/*.whl >/dev/null 2>&1; then
        echo "gpu-run: diffusers is not installed and bench/wheels/ has no wheels (run bench/gpu-wheels.sh)" >&2
        exit 2
    fi
    SITE="${TMPDIR:-/tmp}/bench-gpu-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        bench/wheels/*.whl || exit 2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$PY" -c "import diffusers, torch, transformers; print('gpu-run: torch', torch.__version__, 'diffusers', \
diffusers.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" || exit 2
# The steps keep to the budget; the hard limit is a backstop (what was measured stays in the results file).
timeout -k 15 "$((BUDGET_S + 60))" "$PY" -m bench gpu --budget-s "$BUDGET_S" "$@"
