"""Every KFP component body of the DAG must be importable inside KFP's executor.

The executor sets `_KFP_RUNTIME=true`, which makes `kfp.dsl` a reduced module without `component`: a body
that imports the module building the component (with `dsl.component(...)` at import) dies there.
This runs each body's own import lines in such an environment: the five steps' components and the
pipeline's own gate and promote.
"""
import inspect
import os
import re
import subprocess
import sys

import pytest

# (module that builds the component, the body function, the core its imports must reach)
BODIES = {
    "convert": ("components.convert.component", "_convert_dataset", "from components.convert."),
    "download": ("components.download.component", "_download_model_dir", "from components.download."),
    "evaluate": ("components.evaluate.component", "_evaluate_model", "from components.evaluate."),
    "export": ("components.export.component", "_export_model", "from components.export."),
    "finetune": ("components.finetune.component", "_finetune_model", "from components.finetune."),
    "gate": ("pipelines.steps", "gate", "from pipelines import"),
    "promote": ("pipelines.steps", "promote", "from pipelines import"),
}


def _body_imports(module_name, function_name):
  module = __import__(module_name, fromlist=[function_name])
  source = inspect.getsource(getattr(module, function_name))
  return [line.strip() for line in source.splitlines() if re.match(r"\s+(from \S+ )?import ", line)]


@pytest.mark.parametrize("name", sorted(BODIES))
def test_component_body_imports_work_in_the_kfp_executor(name):
  module_name, function_name, core = BODIES[name]
  imports = _body_imports(module_name, function_name)
  assert any(line.startswith(core) for line in imports), f"{name}: body does not call its core ({core}...)"
  env = dict(os.environ, _KFP_RUNTIME="true")
  result = subprocess.run([sys.executable, "-c", "\n".join(imports)], env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, f"{name} component body fails to import in the KFP executor:\n{result.stderr[-2000:]}"


def test_the_check_catches_a_body_that_imports_a_component_module():
  """The environment above really is the executor's: importing a component module there fails."""
  env = dict(os.environ, _KFP_RUNTIME="true")
  result = subprocess.run([sys.executable, "-c", "import components.finetune.component"], env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and "component" in result.stderr
