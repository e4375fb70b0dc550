#!/usr/bin/env bash
# The wheels bench/gpu_check.py needs on a CUDA machine that has Python 3.12 with torch, transformers, peft,
# accelerate, pandas, pyarrow and the like but no network (checked against an image with torch 2.11,
# transformers 5.17 and huggingface_hub 1.33): what gpu_check imports beyond such an image, found by running it.
# Download them here into a folder (default .whl/), copy the folder and the checkout there, then run:
#
#     python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
#     PYTHONPATH=/tmp/site python3 bench/gpu_check.py --out gpu_check.json
#
# datasets 5.2.0 wants pyarrow >= 24, fsspec <= 2026.9.0 and huggingface_hub >= 1.31 there: `python3 -m pip show
# pyarrow fsspec huggingface_hub` on the machine says whether its own copies do.
set -euo pipefail
out="${1:-.whl}"
python3 -m pip download --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$out" \
    lm-eval==0.4.13 trl==1.16.0 duckdb==2.0.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
