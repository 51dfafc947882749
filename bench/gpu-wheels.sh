#!/usr/bin/env bash
# Prepare bench/wheels/ (git-ignored) for `bench/gpu-run.sh` on a machine without network: the wheels of
# what its image lacks (diffusers, at the version installed here, its small pure-Python needs, and ftfy,
# with which Wan's pipelines clean prompts), for CPython 3.12 on x86-64 Linux, and COMMIT (the machine
# gets the files without .git).
# Run it here, where PyPI is reachable: bash bench/gpu-wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
DIFFUSERS="$("$PY" -c 'import importlib.metadata as m; print(m.version("diffusers"))')"
rm -rf bench/wheels && mkdir -p bench/wheels
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d bench/wheels "diffusers==$DIFFUSERS" importlib_metadata zipp ftfy wcwidth
git rev-parse HEAD >bench/wheels/COMMIT
ls -l bench/wheels
du -sh bench/wheels
TOTAL_KIB="$(du -sk bench/wheels | cut -f1)"
if [ "$TOTAL_KIB" -gt 40960 ]; then
    echo "gpu-wheels: bench/wheels is over 40 MiB: with the working tree it may not fit the 64 MiB carry" >&2
    exit 1
fi
