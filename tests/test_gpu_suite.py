"""benchmarks/gpu_suite.py: it needs nothing beyond jax/flax/optax/torch/transformers and this repository (the
finetune modules it builds the model with load neither grain nor orbax), and its --smoke mode runs every
benchmark part on CPU with tiny shapes and appends its table to the results file."""
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Not installed with jax, flax, optax, torch and transformers (fsspec comes with torch and huggingface-hub,
# and orbax with flax, but the suite must not need orbax either: the trainer's checkpoints).
BLOCKED = ("grain", "orbax", "kfp", "sentencepiece", "array_record", "tensorboardX", "gcsfs", "google.cloud", "PIL",
           "kagglehub")


def _blocking_env(tmp_path) -> dict:
  """An environment whose interpreters (the suite's part processes too) see BLOCKED as not installed.

  Every finder on sys.meta_path is wrapped to find nothing for a blocked name, so `import kfp` raises
  ModuleNotFoundError and `importlib.util.find_spec("kfp")` returns None, as on a machine without it
  (transformers probes optional packages with find_spec at import)."""
  (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(f"""
      import sys
      class _Hiding:
        def __init__(self, finder):
          self.finder = finder
        def find_spec(self, name, path, target=None):
          if any(name == b or name.startswith(b + ".") for b in {BLOCKED!r}):
            return None
          return self.finder.find_spec(name, path, target)
        def __getattr__(self, attribute):  # find_distributions (importlib.metadata), invalidate_caches, ...
          return getattr(self.finder, attribute)
      sys.meta_path[:] = [_Hiding(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
      """))
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)  # one CPU device, as a single accelerator
  return env


def test_the_suite_and_what_it_builds_import_without_the_pipeline_packages(tmp_path):
  code = ("import runpy, sys; runpy.run_path('benchmarks/gpu_suite.py', run_name='gpu_suite');"
          "import components.paligemma, components.paligemma.hf;"
          "from components.finetune import autotune, config, flops, params, state, step;"
          "import components.finetune as f; assert 'components.finetune.trainer' not in sys.modules;"
          "import kfp")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_blocking_env(tmp_path), capture_output=True,
                        text=True, timeout=300)
  # Only the last line failed, on purpose (the blocker works): nothing before it needed a blocked package.
  assert proc.stderr.strip().splitlines()[-1] == "ModuleNotFoundError: No module named 'kfp'", \
      proc.stderr[-3000:]


@pytest.mark.slow
def test_smoke_runs_every_benchmark_part_on_cpu(tmp_path):
  results = tmp_path / "RESULTS.md"
  results.write_text("# results\n")
  proc = subprocess.run(
      [sys.executable, "benchmarks/gpu_suite.py", "--smoke", "--parts", "ours-train,hf-train,ours-decode,hf-decode",
       "--results", str(results), "--budget-s", "1500"],
      cwd=REPO, env=_blocking_env(tmp_path), capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert "failed" not in proc.stdout and "No module named" not in proc.stdout, proc.stdout[-3000:]
  text = results.read_text()
  assert "benchmarks/gpu_suite.py --smoke on 1 x cpu (cpu)" in text
  for run in ("ours, shipped defaults (compute_dtype bfloat16, remat auto -> none", "ours, remat nothing_saveable",
              "transformers' best that fits", "ours, decode (greedy, KV cache, bf16)",
              "transformers generate (greedy, bf16)"):
    assert f"| {run}" in text, (run, text)
  # Every measured row has a rate.
  for line in text.splitlines():
    if line.startswith("| ours") or line.startswith("| transformers"):
      assert line.split("|")[2].strip() or "does not fit" in line or "out of memory" in line, line
