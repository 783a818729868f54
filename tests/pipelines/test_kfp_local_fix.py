"""The KFP local-runner fixes that unit tests can reach without the whole DAG (dsl.If and the run name are
exercised by test_gate_in_dag.py): unset optional parameters, and `python3` inside a step's arguments."""
from typing import Optional

import kfp.local
from kfp import dsl
from kfp.local import subprocess_task_handler

from pipelines import kfp_local_fix


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def _echo(path: str, lr: Optional[float] = None, steps: Optional[int] = None) -> str:
  import json

  return json.dumps({"path": path, "lr": lr, "steps": steps})


@dsl.pipeline(name="optional-parameters")
def _optional_parameters(path: str, lr: Optional[float] = None, steps: Optional[int] = None) -> str:
  return _echo(path=path, lr=lr, steps=steps).output


def test_unset_optional_parameters_reach_the_step_as_none_and_set_ones_unchanged(tmp_path):
  import json

  kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
  kfp_local_fix.install()
  path = "/srv/venv/lib/python3.11/site-packages/pipelines/local_demo.py"  # an installed package's file
  assert json.loads(_optional_parameters(path=path).output) == {"path": path, "lr": None, "steps": None}
  lr = 0.1 + 0.2
  assert json.loads(_optional_parameters(path=path, lr=lr, steps=3).output) == {"path": path, "lr": lr, "steps": 3}


def test_python3_is_replaced_in_the_launcher_only():
  kfp_local_fix.install()
  launcher = 'python3 -m pip --version\n_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main ' \
             '--component_module_path "$program_path/ephemeral_component.py" "$@"\n'
  command = ["sh", "-c", launcher, "def f(): pass  # python3 in the source", "--executor_input",
             '{"path": "/v/lib/python3.11/site-packages/a.py"}']
  got = subprocess_task_handler.replace_python_executable(command, "/v/bin/python")
  assert got[2] == launcher.replace("python3", "/v/bin/python")
  assert got[3:] == command[3:]
