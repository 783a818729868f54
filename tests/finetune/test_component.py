"""The KFP component: its typed settings reach the trainer's config unchanged (None = not set), and its body
trains from a model directory the way the DAG hands it one (the base model's name carried into the workdir)."""
import json
import math

import numpy as np
import pytest
import yaml
from kfp import compiler, dsl

from components.finetune import ConfigError, component, load_config, task

SETTINGS = ("trainable", "total_steps", "epochs", "batch_size", "lr", "text_len", "seed")


def model_dir(root, tokenizer_path, name):
  """A model directory as components.download writes it: random tiny-v2 weights, the small tokenizer."""
  from components import paligemma
  from components.paligemma.checkpoint import param_shapes, unflatten_params

  cfg = paligemma.configs.model_config("tiny-v2")
  cfg["llm"]["vocab_size"] = 2048
  rng = np.random.default_rng(0)
  params = unflatten_params({n: rng.normal(0, 0.02, s).astype(np.float32) for n, s in param_shapes(cfg).items()})
  root.mkdir()
  paligemma.save(params, str(root / "base.npz"))
  (root / "tokenizer.model").write_bytes(open(tokenizer_path, "rb").read())
  (root / "model.json").write_text(json.dumps({**cfg, "name": name, "checkpoint": "base.npz"}))
  return root


def test_compiled_component_settings_are_optional_and_unset_by_default(tmp_path):
  path = tmp_path / "finetune.yaml"
  compiler.Compiler().compile(component.finetune_model, str(path))
  params = yaml.safe_load(path.read_text())["root"]["inputDefinitions"]["parameters"]
  for name in SETTINGS:  # None = not set: the config file's value
    assert params[name]["isOptional"] is True and "defaultValue" not in params[name], params[name]
  assert params["lr"]["parameterType"] == "NUMBER_DOUBLE" and params["seed"]["parameterType"] == "NUMBER_INTEGER"
  assert params["config"]["defaultValue"] == "notebook_attention_sgd" and params["overrides"]["defaultValue"] == []
  assert component.make("registry/img:1").component_spec.implementation.container.image == "registry/img:1"


class _Untouchable(float):
  """A float that fails if anything formats it as text on its way to the config."""

  def _formatted(self, *args):
    raise AssertionError("the value was formatted as text")

  __str__ = __repr__ = __format__ = _formatted


def test_typed_settings_reach_the_trainer_as_the_same_objects(tmp_path, tokenizer_path, monkeypatch):
  from components.finetune import config as config_lib, trainer

  base = model_dir(tmp_path / "base", tokenizer_path, name="colours-base")
  seen = []
  monkeypatch.setattr(trainer, "train", lambda config, workdir: seen.append((config, workdir)) or
                      {"step": 3, "loss": 1.0, "val_loss": None, "status": "done", "model_name": "colours-base"})
  # No text parsing on this path: typed values are assigned as they are.
  monkeypatch.setattr(config_lib, "_PARSERS", {})
  lr = _Untouchable(0.1 + 0.2)  # not a short decimal: any round trip through text would show
  result = task.run_finetune("tiny_test", str(tmp_path / "wd"), "/data", str(base), (), trainable="llm",
                             epochs=2.0, batch_size=None, lr=lr, text_len=24, seed=7)
  (config, workdir), = seen
  assert workdir == str(tmp_path / "wd") and result["model_name"] == "colours-base"
  assert config.optimizer.lr is lr  # bit-identical: the very float the component received
  assert (config.data_dir, config.checkpoint) == ("/data", str(base))
  assert (config.trainable, config.text_len, config.seed) == ("llm", 24, 7)
  assert (config.epochs, config.total_steps) == (2.0, None)  # the parameter's epochs replaced the file's steps
  shipped = load_config(task.config_path("tiny_test"))
  assert config.batch_size == shipped.batch_size  # None kept the config's value


def test_free_form_overrides_are_typed_and_may_not_repeat_a_parameter():
  config = task.resolve_config("tiny_test", "/data", overrides=("optimizer.lr=0.02", "lora.rank=4"), text_len=32)
  assert config.optimizer.lr == 0.02 and config.lora.rank == 4 and config.text_len == 32
  with pytest.raises(ConfigError, match=r"'optimizer.lr' is set twice: by parameter lr and by override "
                                        r"'optimizer.lr=0.1'"):
    task.resolve_config("tiny_test", "/data", overrides=("optimizer.lr=0.1",), lr=0.5)
  with pytest.raises(ConfigError, match=r"'total_steps' and 'epochs' are exclusive.*parameter total_steps and "
                                        r"parameter epochs"):
    task.resolve_config("tiny_test", "/data", total_steps=3, epochs=1.0)
  with pytest.raises(ConfigError, match=r"'seed' is set twice: by parameter seed and by override 'seed=1'"):
    task.resolve_config("tiny_test", "/data", overrides=("seed=1",), seed=0)


def test_the_model_directory_names_the_model(tmp_path, tokenizer_path):
  from components.finetune import params

  base = model_dir(tmp_path / "base", tokenizer_path, name="colours-base")
  for checkpoint in (str(base), str(base / "base.npz")):
    config = task.resolve_config("tiny_test", "/data", checkpoint)
    assert params.resolve_model(config).name == "colours-base"  # not the config file's model_name
  assert params.resolve_model(task.resolve_config("tiny_test", "/data")).name == "tiny-v2"  # random init


def test_unknown_config_name_lists_the_shipped_ones():
  with pytest.raises(FileNotFoundError, match=r"no finetune config named 'tiny'.*'tiny_test'"):
    task.config_path("tiny")
  with pytest.raises(TypeError, match="unknown finetune settings \\['steps'\\]"):
    task.settings_for("/data", steps=3)


@pytest.mark.slow  # ~1 min: compiles and trains the tiny model for 2 steps
def test_component_body_trains_from_a_model_directory(tmp_path, tokenizer_path, dataset_dir):
  base = model_dir(tmp_path / "base", tokenizer_path, name="colours-base")
  tuned = dsl.Model(name="tuned_model", uri=str(tmp_path / "workdir"))
  metrics = dsl.Metrics(name="train_metrics", uri=str(tmp_path / "metrics"))
  out = component._finetune_model(dsl.Model(name="base", uri=str(base)), dsl.Dataset(name="d", uri=dataset_dir),
                                  tuned, metrics, config="tiny_test", total_steps=2,
                                  overrides=["eval_every=2", "checkpoint_every=2", "log_every=1"])
  assert json.loads(out)["step"] == 2 and tuned.metadata["step"] == 2 and tuned.metadata["status"] == "done"
  assert tuned.metadata["name"] == "colours-base"
  workdir_model = json.loads((tmp_path / "workdir" / "model.json").read_text())
  assert workdir_model["name"] == "colours-base" and workdir_model["base_checkpoint"] == str(base / "base.npz")
  assert math.isfinite(metrics.metadata["loss"]) and math.isfinite(metrics.metadata["val_loss"])
  config = json.loads((tmp_path / "workdir" / "config.json").read_text())
  assert (config["total_steps"], config["checkpoint"], config["data_dir"]) == (2, str(base), dataset_dir)
