"""The KFP component as the DAG uses it: the export lands at EXPORT_URI/RUN_ID beside the champion record,
or in its own artifact, and its metadata `uri` says where (the champion record reads it from there)."""
import json

import numpy as np
import pytest
import yaml
from kfp import compiler
from kfp.dsl import Artifact, Model

from components.export import component

VOCAB = 2048


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A model directory as components.download writes it: random tiny-v2 weights, a real small tokenizer."""
  from components import paligemma
  from components.paligemma.checkpoint import param_shapes, unflatten_params

  root = tmp_path_factory.mktemp("model")
  cfg = paligemma.configs.model_config("tiny-v2")
  cfg["llm"]["vocab_size"] = VOCAB
  rng = np.random.default_rng(0)
  paligemma.save(unflatten_params({n: rng.normal(0, 0.02, s).astype(np.float32)
                                   for n, s in param_shapes(cfg).items()}), str(root / "base.npz"))
  paligemma.train_small_tokenizer(str(root / "tokenizer.model"), vocab_size=VOCAB)
  (root / "model.json").write_text(json.dumps({**cfg, "name": "tiny-test", "checkpoint": "base.npz"}))
  return root


def evaluation_dir(root):
  root.mkdir()
  (root / "metrics.json").write_text(json.dumps({"task": "detect", "map50": 0.6}))
  return Artifact(uri=str(root))


def test_export_uri_puts_the_model_at_export_uri_slash_run_id(model_dir, tmp_path):
  exported = Model(uri=str(tmp_path / "artifact"))
  models = tmp_path / "models"
  manifest = json.loads(component._export_model(Model(uri=str(model_dir)), "npz", exported,
                                                evaluation=evaluation_dir(tmp_path / "eval"),
                                                export_uri=str(models) + "/", run_id="paligemma-finetune-42"))
  where = models / "paligemma-finetune-42"
  assert exported.metadata["uri"] == str(where) and exported.metadata["format"] == "npz"
  assert json.loads((where / "manifest.json").read_text()) == manifest
  assert manifest["metrics"]["evaluation"] == {"task": "detect", "map50": 0.6}
  assert (where / "model.npz").exists() and not (tmp_path / "artifact").exists()


def test_without_export_uri_the_model_stays_in_the_artifact(model_dir, tmp_path):
  exported = Model(uri=str(tmp_path / "artifact"))
  component._export_model(Model(uri=str(model_dir)), "npz", exported, run_id="ignored-without-export-uri")
  assert exported.metadata["uri"] == exported.uri == str(tmp_path / "artifact")
  assert (tmp_path / "artifact" / "model.npz").exists()


def test_export_uri_without_run_id_is_a_clear_error(model_dir, tmp_path):
  with pytest.raises(ValueError, match="needs a run_id"):
    component._export_model(Model(uri=str(model_dir)), "npz", Model(uri=str(tmp_path / "a")),
                            export_uri=str(tmp_path / "models"))
  assert not (tmp_path / "models").exists()


def test_compiled_component_takes_export_uri_and_run_id(tmp_path):
  path = tmp_path / "export.yaml"
  compiler.Compiler().compile(component.export_model, str(path))
  params = yaml.safe_load(path.read_text())["root"]["inputDefinitions"]["parameters"]
  assert params["export_uri"]["defaultValue"] == "" and params["run_id"]["defaultValue"] == ""
  assert component.make("registry/img:1").component_spec.implementation.container.image == "registry/img:1"


def test_export_location():
  from components.export.task import export_location

  assert export_location("gs://b/models/", "run-7", "/fallback") == "gs://b/models/run-7"
  assert export_location("", "run-7", "/fallback") == "/fallback"
  with pytest.raises(ValueError, match="export_uri 'gs://b/models' needs a run_id"):
    export_location("gs://b/models", "", "/fallback")
