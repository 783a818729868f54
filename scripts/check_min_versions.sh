#!/usr/bin/env bash
# The fast suite on the declared minimum versions: .venv-min gets every direct dependency at its floor in
# pyproject.toml (uv --resolution lowest-direct), so a floor that is too low fails here, not for a user.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MIN_VENV:-.venv-min}
uv venv -q --allow-existing -p 3.11 "$venv"
uv pip install -q -p "$venv/bin/python" --resolution lowest-direct -e ".[dev,tpu]" $(scripts/torch_source.sh)
echo "minimum versions: $("$venv/bin/python" -c 'import jax, flax, optax, orbax.checkpoint as o, kfp, transformers; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "orbax", o.__version__, "kfp", kfp.__version__, "transformers", transformers.__version__)')"
# The fast tests of the code the floors are about (jax/flax/optax/orbax in the model library and the trainer,
# kfp in the pipeline, transformers in export), or what the arguments name: CI's 90 minutes also hold the
# whole suite at the tested versions, which covers the rest.
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(tests/paligemma tests/finetune tests/common tests/pipelines tests/export)
"$venv/bin/python" -m pytest -m "not slow" "${targets[@]}"
