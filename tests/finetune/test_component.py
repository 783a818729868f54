"""The KFP component: the pipeline's settings reach the trainer's config, and its body trains from a model
directory the way the DAG hands it one (the base model's name carried into the tuned workdir)."""
import json
import math

import numpy as np
import pytest
import yaml
from kfp import compiler, dsl

from components.finetune import component, load_config, task

SETTINGS = {"trainable": "", "total_steps": 0, "epochs": 0.0, "batch_size": 0, "lr": 0.0, "text_len": 0}


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


def test_compiled_component_takes_the_pipeline_settings_defaulting_to_the_config(tmp_path):
  path = tmp_path / "finetune.yaml"
  compiler.Compiler().compile(component.finetune_model, str(path))
  params = yaml.safe_load(path.read_text())["root"]["inputDefinitions"]["parameters"]
  assert {name: params[name]["defaultValue"] for name in SETTINGS} == SETTINGS
  assert params["config"]["defaultValue"] == "notebook_attention_sgd" and params["overrides"]["defaultValue"] == []
  assert component.make("registry/img:1").component_spec.implementation.container.image == "registry/img:1"


def test_settings_reach_the_config_and_zero_keeps_the_configs_value(tmp_path, tokenizer_path, monkeypatch):
  from components.finetune import trainer

  base = model_dir(tmp_path / "base", tokenizer_path, name="colours-base")
  seen = []
  monkeypatch.setattr(trainer, "train", lambda config, workdir: seen.append((config, workdir)) or
                      {"step": 3, "loss": 1.0, "val_loss": None, "status": "done"})
  result = task.run_finetune("tiny_test", str(tmp_path / "wd"), "/data", str(base), ("optimizer.lr=0.02",),
                             trainable="llm", total_steps=3, epochs=0.0, batch_size=0, lr=0.5, text_len=24)
  (config, workdir), = seen
  assert workdir == str(tmp_path / "wd") and result["model_name"] == "colours-base"
  assert (config.data_dir, config.checkpoint, config.model_name) == ("/data", str(base), "colours-base")
  assert (config.trainable, config.total_steps, config.text_len) == ("llm", 3, 24)
  assert config.optimizer.lr == 0.02  # the free-form overrides apply last
  shipped = load_config(task.config_path("tiny_test"))
  assert (config.batch_size, config.epochs) == (shipped.batch_size, shipped.epochs)  # 0 kept the config's


def test_an_npz_checkpoint_names_the_model_of_its_directory(tmp_path, tokenizer_path):
  base = model_dir(tmp_path / "base", tokenizer_path, name="colours-base")
  assert task.checkpoint_model_name(str(base / "base.npz")) == "colours-base"
  assert task.checkpoint_model_name(str(tmp_path / "loose.npz")) == ""  # no model.json beside it
  assert task.checkpoint_model_name("") == ""


def test_unknown_config_name_lists_the_shipped_ones():
  with pytest.raises(FileNotFoundError, match=r"no finetune config named 'tiny'.*'tiny_test'"):
    task.config_path("tiny")
  with pytest.raises(TypeError, match="unknown finetune settings \\['steps'\\]"):
    task.overrides_for("/data", steps=3)


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
