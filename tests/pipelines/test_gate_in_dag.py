"""The gate inside a KFP DAG on the local runner: a model worse than the champion is not exported.

The evaluations are imported from directories this test writes (the evaluate step's metrics.json layout; the
champion's re-scored one with the split.json the rescore step writes); the champion step reads a real record;
gate -> dsl.If -> export -> promote is the pipeline's own `gate_and_promote`, with its real components.
"""
import json
import os

import pytest
from kfp import dsl

from pipelines import dag, kfp_local_fix, steps
from pipelines.targets import get_target

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::FutureWarning")


TODAY = {"name": "valid", "fingerprint": "sha256:" + "d" * 64, "examples": 240, "dataset": "/data"}
YESTERDAY = {"name": "valid", "fingerprint": "sha256:" + "e" * 64, "examples": 200}


def evaluation_dir(path, map50, split=None):
  os.makedirs(path)
  with open(os.path.join(path, "metrics.json"), "w") as f:
    json.dump({"map": map50 / 2, "map50": map50, "map75": map50 / 3, "num_examples": 240}, f)
  with open(os.path.join(path, "report.html"), "w") as f:
    f.write("<html></html>")
  if split:
    with open(os.path.join(path, "split.json"), "w") as f:
      json.dump(split, f)
  return str(path)


def run_gate(tmp_path, *, base, tuned, champion_stored, champion_rescored):
  import kfp.local

  models = tmp_path / "models"
  models.mkdir()
  record = {"model_uri": "gs://acme-models/run-1", "metric": "map50", "value": champion_stored, "run_id": "run-1",
            "date": "2026-11-01T00:00:00+00:00", "task": "detect", "split": YESTERDAY}
  (models / "champion.json").write_text(json.dumps(record))
  base_dir = evaluation_dir(tmp_path / "base", base)
  tuned_dir = evaluation_dir(tmp_path / "tuned", tuned)
  champion_dir = evaluation_dir(tmp_path / "champion", champion_rescored, split=TODAY)
  ops = steps.make_components("python:3.11")

  @dsl.pipeline(name="gate-only")
  def gate_only(export_uri: str) -> dsl.Artifact:
    base_eval = dsl.importer(artifact_uri=base_dir, artifact_class=dsl.Artifact)
    tuned_eval = dsl.importer(artifact_uri=tuned_dir, artifact_class=dsl.Artifact)
    champion_eval = dsl.importer(artifact_uri=champion_dir, artifact_class=dsl.Artifact)
    model = dsl.importer(artifact_uri=str(tmp_path / "workdir"), artifact_class=dsl.Model)
    current = ops.champion(task="detect", champion_uri="", export_uri=export_uri, rebaseline=False)
    decision = dag.gate_and_promote(
        ops, task="detect", base_evaluation=base_eval.output, tuned_evaluation=tuned_eval.output,
        champion=current.outputs["champion"], champion_evaluation=champion_eval.output, tuned_model=model.output,
        export_uri=export_uri, min_metric=0.0, min_improvement=0.0, export_format="npz", export_dtype="",
        register=False, base_model="small-v2", dataset_uri="/data")
    return decision.outputs["decision"]

  kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
  kfp_local_fix.install()
  task = gate_only(export_uri=str(models))
  with open(task.output.path) as f:
    return json.load(f), models, record


def test_worse_than_champion_is_not_exported_and_the_run_says_why(tmp_path, capfd):
  decision, models, record = run_gate(tmp_path, base=0.10, tuned=0.55, champion_stored=0.70, champion_rescored=0.70)
  assert decision["passed"] is False and decision["reference_name"] == "champion"
  assert "0.5500 does not beat the champion's 0.7000" in decision["reason"]
  assert "[gate] The tuned model's map50 0.5500 does not beat the champion's 0.7000" in capfd.readouterr().out
  assert os.listdir(models) == ["champion.json"]  # nothing exported
  assert json.loads((models / "champion.json").read_text()) == record  # the champion stays
  run_dirs = os.listdir(tmp_path / "root")
  assert len(run_dirs) == 1 and not os.path.exists(tmp_path / "root" / run_dirs[0] / "condition-1")


def test_beating_only_the_stored_score_is_not_exported(tmp_path):
  """(b) in the DAG: the tuned model (0.65) beats the champion's stored score from yesterday's split (0.60),
  not the champion re-scored on today's (0.70). Nothing is exported; the Markdown shows every number."""
  decision, models, record = run_gate(tmp_path, base=0.05, tuned=0.65, champion_stored=0.60, champion_rescored=0.70)
  assert decision["passed"] is False and decision["reference"] == 0.70
  assert decision["champion_stored"] == 0.60 and decision["champion_rescored"] == 0.70
  assert decision["champion_generation"].startswith("sha256:") and decision["split"]["fingerprint"] == TODAY["fingerprint"]
  assert os.listdir(models) == ["champion.json"]
  run_dir = tmp_path / "root" / os.listdir(tmp_path / "root")[0]
  markdown = (run_dir / "gate" / "explanation").read_text()
  for text in ("| tuned | 0.6500 | this run's split |", "| base | 0.0500 | this run's split |",
               "re-scored | 0.7000 | this run's split |", "stored when promoted | 0.6000 |",
               f"fingerprint `{TODAY['fingerprint']}`, 240 examples", "not this run's split"):
    assert text in markdown, markdown


def test_local_fix_makes_the_branch_run_when_the_gate_passes(tmp_path):
  """With a weaker champion the branch runs: export starts (and fails on this fake workdir)."""
  with pytest.raises(RuntimeError, match="finished with status.*FAILURE"):
    run_gate(tmp_path, base=0.10, tuned=0.55, champion_stored=0.30, champion_rescored=0.30)
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
