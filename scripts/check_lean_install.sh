#!/usr/bin/env bash
# The base package alone (pip install ., no extras) in a fresh venv: the offline demo runs end to end, every
# target compiles, an extra's feature names the extra to install, and no optional package came along.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
venv=$repo/${LEAN_VENV:-.venv-lean}
rm -rf "$venv"
uv venv -q -p 3.11 "$venv"
uv pip install -q -p "$venv/bin/python" -c constraints.txt "$repo"
python=$venv/bin/python
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"  # outside the checkout: the installed package runs, not the sources

"$python" - <<'PY'
import importlib.util
extras = [m for m in ("transformers", "tokenizers", "datasets", "pyarrow", "pycocoevalcap", "torch", "crcmod")
          if importlib.util.find_spec(m)]
assert not extras, f"the base install pulled in {extras}"
PY
"$python" -m pipelines.local --output "$work/run" --train-images 64 --valid-images 8 --steps 5
"$python" -m pipelines.compile --target local --output "$work/local.yaml" >/dev/null
"$python" - "$work" <<'PY'  # every other target in one process: the CLI's function, without 27 start-ups
import os, sys
from pipelines.compile import compile_pipeline
from pipelines.targets import TARGETS
for name in TARGETS:
  compile_pipeline(name, os.path.join(sys.argv[1], f"{name}.yaml"))
print(f"compiled: {len(TARGETS)} targets")
PY
if "$python" -m components.export --checkpoint "$work/run" --format hf --output "$work/hf" 2>"$work/err"; then
  echo "export --format hf worked without the hf extra" >&2; exit 1
fi
grep -q "pip install 'paligemma-pipelines\[hf\]'" "$work/err" || { cat "$work/err" >&2; exit 1; }
echo "lean install OK: $(tail -1 "$work/err")"
