#!/usr/bin/env bash
# The fast suite on the declared minimum versions: .venv-min gets every direct dependency at its floor in
# pyproject.toml (uv --resolution lowest-direct), so a floor that is too low fails here, not for a user.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MIN_VENV:-.venv-min}
uv venv -q --allow-existing -p 3.11 "$venv"
uv pip install -q -p "$venv/bin/python" --resolution lowest-direct -e ".[dev,tpu]" $(scripts/torch_source.sh)
echo "minimum versions: $("$venv/bin/python" -c 'import jax, flax, optax, orbax.checkpoint as o, kfp, transformers; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "orbax", o.__version__, "kfp", kfp.__version__, "transformers", transformers.__version__)')"
"$venv/bin/python" -m pytest -m "not slow" "$@"
