#!/usr/bin/env bash
# Creates .venv with the package and everything its tests need: CPU PyTorch + transformers for the parity
# tests and jax[tpu] (libtpu) so the fit planner can compile for Cloud TPU without a TPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q uv
uv venv -q --allow-existing -p 3.11 .venv
torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
# A machine that carries the CPU torch wheel on disk (CI here) installs it from there.
if [ -d /opt/wheels ]; then torch_source=(--find-links /opt/wheels); fi
uv pip install -q -p .venv/bin/python -e ".[dev,tpu]" "${torch_source[@]}"
echo "installed: $(.venv/bin/python -c 'import jax, flax, kfp, torch, transformers; print("jax", jax.__version__, "flax", flax.__version__, "kfp", kfp.__version__, "torch", torch.__version__, "transformers", transformers.__version__)')"
