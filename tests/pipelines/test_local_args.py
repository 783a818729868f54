"""`python -m pipelines.local`'s finetune settings: what the DAG hands the trainer, checked before anything runs
(the end-to-end run with `--epochs 2` is in test_local_run.py, slow)."""
import os

import pytest

from components.finetune import task
from components.finetune.config import ConfigError
from pipelines import local, local_demo


def demo_arguments(argv, output, monkeypatch):
  monkeypatch.setattr(local, "prepare_demo", lambda *a, **k: dict(
      model="demo-v2", finetune_config=os.path.abspath(local_demo.__file__), seed=local_demo.DEMO["seed"]))
  return local.pipeline_arguments(local.parse_args(argv), str(output))


def test_epochs_replaces_the_demo_configs_steps(tmp_path, monkeypatch):
  arguments = demo_arguments(["--epochs", "2"], tmp_path, monkeypatch)
  assert arguments["epochs"] == 2.0 and "total_steps" not in arguments  # unset: not 0
  assert local_demo.get_config().total_steps == 1500  # the demo config counts steps ...
  settings = {k: arguments[k] for k in task.SETTINGS if k in arguments}
  config = task.resolve_config(arguments["finetune_config"], "/data", **settings)
  assert (config.epochs, config.total_steps) == (2.0, None)  # ... the trainer gets two epochs
  assert config.seed == arguments["seed"] == local_demo.DEMO["seed"]


def test_bad_settings_fail_before_the_demo_inputs_are_written(tmp_path, monkeypatch):
  def too_early(*args, **kwargs):
    raise AssertionError("the demo's inputs were written before the settings were checked")

  monkeypatch.setattr(local, "prepare_demo", too_early)
  for argv, match in ((["--set", "lrr=1"], "unknown config key 'lrr'"),
                      (["--steps", "3", "--epochs", "1"], "'total_steps' and 'epochs' are exclusive"),
                      (["--seed", "3", "--set", "seed=4"], "'seed' is set twice")):
    with pytest.raises(ConfigError, match=match):
      local.pipeline_arguments(local.parse_args(argv), str(tmp_path))
  assert local.main(["--set", "lrr=1", "--output", str(tmp_path / "run")]) == 2
