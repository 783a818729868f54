"""The KFP component: it compiles, and its body publishes the metrics and the HTML report."""
import json
import os

import pytest
import yaml
from kfp import compiler, dsl

from components.evaluate.component import _evaluate_model, evaluate_model
from components.evaluate.task import scalar_metrics


def test_component_compiles_with_typed_artifacts(tmp_path):
  @dsl.pipeline(name="evaluate-only")
  def pipeline(task: str = "detect"):
    model = dsl.importer(artifact_uri="gs://bucket/model", artifact_class=dsl.Model)
    data = dsl.importer(artifact_uri="gs://bucket/data", artifact_class=dsl.Dataset)
    evaluate_model(model=model.output, dataset=data.output, task=task)

  path = tmp_path / "p.yaml"
  compiler.Compiler().compile(pipeline, str(path))
  spec = yaml.safe_load(path.read_text())["components"]["comp-evaluate-model"]
  assert set(spec["outputDefinitions"]["artifacts"]) == {"evaluation", "metrics", "report"}
  assert spec["outputDefinitions"]["artifacts"]["report"]["artifactType"]["schemaTitle"] == "system.HTML"
  assert spec["outputDefinitions"]["artifacts"]["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
  assert spec["inputDefinitions"]["artifacts"]["baseline"].get("isOptional") is True


@pytest.mark.slow
def test_component_body_publishes_metrics_and_report(tiny_model_dir, detect_dataset, tmp_path):
  model = dsl.Model(name="model", uri=tiny_model_dir)  # a model directory, as the download step writes
  data = dsl.Dataset(name="data", uri=detect_dataset)
  evaluation = dsl.Artifact(name="evaluation", uri=str(tmp_path / "evaluation"))
  metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
  report = dsl.HTML(name="report", uri=str(tmp_path / "report.html"))
  _evaluate_model(model, data, "detect", evaluation, metrics, report, max_decode_len=6, limit=3, batch_size=2)
  written = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
  assert metrics.metadata["num_examples"] == 3.0 == written["num_examples"]
  assert metrics.metadata == scalar_metrics(written)  # every number, nested ones as per_class/NAME/ap
  assert all(isinstance(v, float) for v in metrics.metadata.values())  # undefined (null) values left out
  assert os.path.getsize(report.path) == os.path.getsize(tmp_path / "evaluation" / "report.html")


def test_component_exposes_which_prompt_len_and_seed(tmp_path, monkeypatch):
  from components.evaluate import runner

  path = tmp_path / "c.yaml"
  compiler.Compiler().compile(evaluate_model, str(path))
  params = yaml.safe_load(path.read_text())["root"]["inputDefinitions"]["parameters"]
  assert {"which", "prompt_len", "seed", "vqvae"} <= set(params)
  seen = []
  monkeypatch.setattr(runner, "run", lambda args: seen.append(args) or {})
  from components.evaluate.task import run_evaluate
  run_evaluate("ckpt", "data", "vqa", "out", which="best", prompt_len=24, seed=7)
  run_evaluate("ckpt", "data", "segment", "out", vqvae="gs://b/vae-oid.npz")
  run_evaluate("ckpt", "data", "vqa", "out")
  assert (seen[0].which, seen[0].prompt_len, seen[0].seed) == ("best", 24, 7)
  assert seen[1].vqvae == "gs://b/vae-oid.npz"
  assert (seen[2].which, seen[2].prompt_len, seen[2].seed, seen[2].vqvae) == ("latest", None, 0, None)


def test_scalar_metrics_flattens_and_drops_non_numbers():
  metrics = {"map50": 0.5, "per_class": {"circle": {"ap": 0.25}}, "malformed": 3, "note": "x", "ok": True}
  assert scalar_metrics(metrics) == {"map50": 0.5, "per_class/circle/ap": 0.25, "malformed": 3.0}
