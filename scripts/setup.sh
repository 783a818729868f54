#!/usr/bin/env bash
# Creates .venv with the package and everything its tests need, at the tested versions (constraints.txt):
# every extra (hf, hf-data, caption), CPU PyTorch + transformers for the parity tests, and jax[tpu] (libtpu)
# so the fit planner can compile for Cloud TPU without a TPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q uv
uv venv -q --allow-existing -p 3.11 .venv
uv pip install -q -p .venv/bin/python -c constraints.txt -e ".[dev,tpu]" $(scripts/torch_source.sh)
echo "installed: $(.venv/bin/python -c 'import jax, flax, kfp, torch, transformers; print("jax", jax.__version__, "flax", flax.__version__, "kfp", kfp.__version__, "torch", torch.__version__, "transformers", transformers.__version__)')"
