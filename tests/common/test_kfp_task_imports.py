"""Every step's KFP component body must be importable inside KFP's executor.

The executor sets `_KFP_RUNTIME=true`, which makes `kfp.dsl` a reduced module without `component`: a body
that imports the module building the component (with `dsl.component(...)` at import) dies there.
This runs each body's own import lines in such an environment.
"""
import inspect
import os
import re
import subprocess
import sys

import pytest

STEPS = {
    "convert": "_convert_dataset",
    "download": "_download_model_dir",
    "evaluate": "_evaluate_model",
    "export": "_export_model",
    "finetune": "_finetune_model",
}


def _body_imports(step, function_name):
  module = __import__(f"components.{step}.component", fromlist=[function_name])
  source = inspect.getsource(getattr(module, function_name))
  return [line.strip() for line in source.splitlines() if re.match(r"\s+(from \S+ )?import ", line)]


@pytest.mark.parametrize("step", sorted(STEPS))
def test_component_body_imports_work_in_the_kfp_executor(step):
  imports = _body_imports(step, STEPS[step])
  assert any(line.startswith("from components.") for line in imports), f"{step}: body does not call the core"
  env = dict(os.environ, _KFP_RUNTIME="true")
  result = subprocess.run([sys.executable, "-c", "\n".join(imports)], env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, f"{step} component body fails to import in the KFP executor:\n{result.stderr[-2000:]}"
