"""The layers, read from the source: every module under components/ (module-level and in-function imports).

- Nothing under components/ imports `pipelines` (the DAG sits above the steps and binds their images).
- No step imports another step: steps depend on the model library (components.paligemma) and
  components.common only; those two import no step.
"""
import ast
import pathlib

import pytest

COMPONENTS = pathlib.Path(__file__).resolve().parents[2] / "components"
STEPS = ("download", "convert", "finetune", "evaluate", "export")
MODULES = sorted(p for p in COMPONENTS.rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: pathlib.Path) -> set[str]:
  """Every module an import statement in `path` names (`from a import b` gives `a` and `a.b`)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      assert node.level == 0, f"{path}: relative import; the package uses absolute ones"
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


def layer(path: pathlib.Path) -> str:
  """`paligemma`, `common`, a step's name, or `components` for the package's own __init__."""
  parts = path.relative_to(COMPONENTS).parts
  return parts[0] if len(parts) > 1 else "components"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(COMPONENTS)))
def test_module_imports_stay_in_their_layer(path):
  own = layer(path)
  imported = imported_modules(path)
  assert not [m for m in imported if m == "pipelines" or m.startswith("pipelines.")], \
      f"{path} imports the pipeline package"
  others = {m.split(".")[1] for m in imported if m.startswith("components.") and m.split(".")[1] in STEPS}
  others.discard(own)
  assert not others, f"{path} ({own}) imports the step(s) {sorted(others)}; move what they share to " \
                     "components/common or the model library"


def test_the_walk_sees_every_step_and_every_kind_of_import(tmp_path):
  """The check itself: it reads lazy imports inside functions and both import forms."""
  assert {layer(p) for p in MODULES} >= {"paligemma", "common", *STEPS}
  sample = tmp_path / "sample.py"
  sample.write_text("import os\n\ndef f():\n  from components import finetune\n  import pipelines.images\n")
  assert {"components.finetune", "pipelines.images"} <= imported_modules(sample)
