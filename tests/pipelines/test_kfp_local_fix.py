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


# --- fix 6: live, quiet step output

def test_step_output_leaves_out_the_executors_bookkeeping_and_keeps_the_steps_lines():
  lines = [
      "[KFP Executor 2026-11-30 05:25:47,471 INFO]: Looking for component `f` in --component_module_path `/t/e.py`\n",
      "[KFP Executor 2026-11-30 05:25:47,474 INFO]: Loading KFP component \"f\" from /t/e.py\n",
      "[KFP Executor 2026-11-30 05:25:47,475 INFO]: Got executor_input:\n",
      "{\n", '    "inputs": {\n', '        "parameterValues": {"a": 1}\n', "    }\n", "}\n",
      "[KFP Executor 2026-11-30 05:25:48,000 INFO]: step 50/1500 | loss 1.2\n",
      "[KFP Executor 2026-11-30 05:25:48,001 WARNING]: text_len 24 truncates 3 of 5 training examples\n",
      "[champion] no champion\n",
      "[KFP Executor 2026-11-30 05:25:48,100 INFO]: Wrote executor output file to /t/executor_output.json.\n",
      "\n",
  ]
  assert list(kfp_local_fix.shown_lines(lines)) == [
      "step 50/1500 | loss 1.2\n", "WARNING: text_len 24 truncates 3 of 5 training examples\n",
      "[champion] no champion\n"]


def test_step_environment_is_unbuffered_and_skips_the_tpu_probe_without_a_tpu(monkeypatch):
  monkeypatch.setattr(kfp_local_fix, "has_tpu", lambda: False)
  monkeypatch.setattr(kfp_local_fix.importlib.util, "find_spec", lambda name: object())  # libtpu installed
  monkeypatch.setattr(kfp_local_fix.glob, "glob", lambda pattern: [])  # no GPU either
  env = kfp_local_fix.step_environment({"PATH": "/bin"})
  assert env == {"PATH": "/bin", "PYTHONUNBUFFERED": "1", "JAX_PLATFORMS": "cpu"}
  assert kfp_local_fix.step_environment({"JAX_PLATFORMS": "tpu"})["JAX_PLATFORMS"] == "tpu"  # the user's choice
  monkeypatch.setattr(kfp_local_fix, "has_tpu", lambda: True)
  assert "JAX_PLATFORMS" not in kfp_local_fix.step_environment({})


def test_a_steps_lines_arrive_while_it_runs(monkeypatch, capfd):
  import sys
  import time

  arrived = []
  monkeypatch.setattr(kfp_local_fix, "LINE_HOOK", lambda line: arrived.append((line, time.monotonic())))
  # print() without flush: a block-buffered child would hold "first" until it exits
  program = ("import time; print('[KFP Executor 2026-11-30 05:25:47,471 INFO]: Got executor_input:'); print('{'); "
             "print('}'); print('first'); time.sleep(3); print('second')")
  start = time.monotonic()
  assert kfp_local_fix.run_local_subprocess([sys.executable, "-c", program]) == 0
  end = time.monotonic()
  assert [line for line, _ in arrived] == ["first\n", "second\n"]
  assert arrived[0][1] < end - 2, (arrived[0][1] - start, end - start)  # before the step ended
  assert capfd.readouterr().out == "first\nsecond\n"  # the executor's input left out


def test_a_read_only_checkpoint_manager_logs_no_warning(tmp_path, caplog):
  """Readers (evaluate, export) ask for read-only managers; orbax's notices about it are not news."""
  import logging

  from components.common import train_checkpoints

  (tmp_path / "checkpoints").mkdir()
  with caplog.at_level(logging.INFO):
    train_checkpoints.manager(str(tmp_path), read_only=True)
  assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
