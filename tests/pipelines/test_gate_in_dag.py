"""The gate inside a KFP DAG on the local runner: a model worse than the champion is not exported.

The evaluations are imported from directories this test writes (the evaluate step's metrics.json layout);
gate -> dsl.If -> export -> promote is the pipeline's own `gate_and_promote`, with its real components.
"""
import json
import os

import pytest
from kfp import dsl

from pipelines import dag, kfp_local_fix, steps
from pipelines.targets import get_target

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::FutureWarning")


def evaluation_dir(path, map50):
  os.makedirs(path)
  with open(os.path.join(path, "metrics.json"), "w") as f:
    json.dump({"map": map50 / 2, "map50": map50, "map75": map50 / 3}, f)
  with open(os.path.join(path, "report.html"), "w") as f:
    f.write("<html></html>")
  return str(path)


def run_gate(tmp_path, *, base, tuned, champion_value):
  import kfp.local

  models = tmp_path / "models"
  models.mkdir()
  record = {"model_uri": "gs://acme-models/run-1", "metric": "map50", "value": champion_value, "run_id": "run-1",
            "date": "2026-11-01T00:00:00+00:00"}
  (models / "champion.json").write_text(json.dumps(record))
  base_dir = evaluation_dir(tmp_path / "base", base)
  tuned_dir = evaluation_dir(tmp_path / "tuned", tuned)
  ops = steps.make_components("python:3.11")

  @dsl.pipeline(name="gate-only")
  def gate_only(export_uri: str) -> dsl.Artifact:
    base_eval = dsl.importer(artifact_uri=base_dir, artifact_class=dsl.Artifact)
    tuned_eval = dsl.importer(artifact_uri=tuned_dir, artifact_class=dsl.Artifact)
    model = dsl.importer(artifact_uri=str(tmp_path / "workdir"), artifact_class=dsl.Model)
    decision = dag.gate_and_promote(
        ops, task="detect", base_evaluation=base_eval.output, tuned_evaluation=tuned_eval.output,
        tuned_model=model.output, champion_uri="", export_uri=export_uri, min_metric=0.0, min_improvement=0.0,
        export_format="npz", export_dtype="", register=False, base_model="small-v2", dataset_uri="/data")
    return decision.outputs["decision"]

  kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
  kfp_local_fix.install()
  task = gate_only(export_uri=str(models))
  with open(task.output.path) as f:
    return json.load(f), models, record


def test_worse_than_champion_is_not_exported_and_the_run_says_why(tmp_path, capfd):
  decision, models, record = run_gate(tmp_path, base=0.10, tuned=0.55, champion_value=0.70)
  assert decision["passed"] is False and decision["reference_name"] == "champion"
  assert "0.5500 does not beat the champion's 0.7000" in decision["reason"]
  assert "[gate] The tuned model's map50 0.5500 does not beat the champion's 0.7000" in capfd.readouterr().out
  assert os.listdir(models) == ["champion.json"]  # nothing exported
  assert json.loads((models / "champion.json").read_text()) == record  # the champion stays
  run_dirs = os.listdir(tmp_path / "root")
  assert len(run_dirs) == 1 and not os.path.exists(tmp_path / "root" / run_dirs[0] / "condition-1")


def test_local_fix_makes_the_branch_run_when_the_gate_passes(tmp_path):
  """With a weaker champion the branch runs: export starts (and fails on this fake workdir)."""
  with pytest.raises(RuntimeError, match="finished with status.*FAILURE"):
    run_gate(tmp_path, base=0.10, tuned=0.55, champion_value=0.30)
  run_dir = tmp_path / "root" / os.listdir(tmp_path / "root")[0]
  assert (run_dir / "gate" / "decision").exists()
  assert os.path.isdir(run_dir / "condition-1" / "export")


def test_compiled_condition_is_what_the_fix_evaluates():
  target = get_target("local")  # the condition string the local runner is given, from the real DAG
  from kfp import compiler
  import tempfile
  import yaml

  with tempfile.TemporaryDirectory() as tmp:
    compiler.Compiler().compile(dag.build_pipeline(target), f"{tmp}/p.yaml")
    with open(f"{tmp}/p.yaml") as f:
      condition = yaml.safe_load(f)["root"]["dag"]["tasks"]["condition-1"]["triggerPolicy"]["condition"]

  class Store:
    def __init__(self, passed):
      self.passed = passed

    def get_task_output(self, task, key):
      if (task, key) == ("gate", "passed"):
        return self.passed
      raise ValueError(f"no output {key} of {task}")

    def get_parent_input(self, name):
      raise ValueError(name)

  assert kfp_local_fix.evaluate_condition(condition, Store(True)) is True
  assert kfp_local_fix.evaluate_condition(condition, Store(False)) is False
