"""The real DAG, every step, under the KFP local runner on CPU (tiny settings: the mechanics, not accuracy).

1. The compiled `local` YAML, loaded back with `kfp.components.load_component_from_file`, completes; with a
   champion it cannot beat, the gate stops it before export and says why.
2. `python -m pipelines.local` end to end: with a weak champion the gate passes, the model is exported
   and becomes the champion, and summary.json says so.
"""
import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::FutureWarning")]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(total_steps=2, batch_size=8, eval_limit=4)  # batch: a multiple of the 8 test devices


def write_champion(path, value):
  record = {"model_uri": "gs://acme-models/run-0", "metric": "map50", "value": value, "run_id": "run-0",
            "date": "2026-11-01T00:00:00+00:00"}
  path.write_text(json.dumps(record))
  return record


def test_compiled_local_yaml_runs_under_the_local_runner(tmp_path):
  import kfp.components
  import kfp.local

  from pipelines import kfp_local_fix
  from pipelines.compile import compile_pipeline
  from pipelines.local import prepare_demo

  package = compile_pipeline("local", str(tmp_path / "pipeline.yaml"))
  pipeline = kfp.components.load_component_from_file(package)
  arguments = prepare_demo(str(tmp_path / "inputs"), train_images=8, valid_images=4)
  (tmp_path / "models").mkdir()
  record = write_champion(tmp_path / "models" / "champion.json", 1.01)  # no mAP can beat it

  kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
  kfp_local_fix.install()
  task = pipeline(**{**arguments, **TINY, "export_uri": str(tmp_path / "models")})

  with open(task.output.path) as f:
    decision = json.load(f)
  assert decision["passed"] is False and decision["reference_name"] == "champion"
  assert "does not beat the champion's 1.0100" in decision["reason"]
  for which in ("base_metrics", "tuned_metrics"):
    assert {"map", "map50", "map75"} <= set(decision[which])
  assert os.path.exists(decision["tuned_report"])
  assert os.listdir(tmp_path / "models") == ["champion.json"]
  assert json.loads((tmp_path / "models" / "champion.json").read_text()) == record
  run_dir = tmp_path / "root" / os.listdir(tmp_path / "root")[0]
  assert {"download", "convert", "finetune", "evaluate", "evaluate-2", "gate"} <= set(os.listdir(run_dir))
  with open(run_dir / "finetune" / "tuned_model" / "config.json") as f:
    assert json.load(f)["total_steps"] == 2  # the pipeline parameter reached the trainer


def test_pipelines_local_end_to_end(tmp_path):
  out = tmp_path / "run"
  champion = tmp_path / "champion.json"
  write_champion(champion, -1.0)  # any model beats it: exercise export and promotion
  result = subprocess.run(
      [sys.executable, "-m", "pipelines.local", "--output", str(out), "--train-images", "8", "--valid-images", "4",
       "--steps", "2", "--batch", "8", "--eval-limit", "4", "--champion", str(champion)],
      cwd=REPO, capture_output=True, text=True, timeout=1800)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  assert {"map", "map50", "map75"} <= set(summary["base"]) and {"map50"} <= set(summary["tuned"])
  assert summary["gate"]["passed"] is True and summary["gate"]["metric"] == "map50"
  assert "beats the champion's -1.0000" in summary["gate"]["reason"]
  assert os.path.exists(summary["report"])
  exported = summary["exported_model"]
  run_name = os.listdir(out / "artifacts")[0]
  assert exported == str(out / "models" / run_name)  # EXPORT_URI/<pipeline run name>, as on Vertex AI
  assert os.path.exists(os.path.join(exported, "manifest.json"))
  assert any(name.endswith(".npz") for name in os.listdir(exported))
  record = json.loads(champion.read_text())
  assert record["model_uri"] == exported and record["value"] == summary["tuned"]["map50"]
  assert f"exported model: {exported}" in result.stdout
  # Each task's wall time, from the local runner's own log records (the --smoke timing).
  assert {"download", "convert", "finetune", "evaluate", "gate", "export"} <= set(summary["step_seconds"])
  assert all(seconds >= 0 for seconds in summary["step_seconds"].values()) and "seconds per step:" in result.stdout


def test_default_demo_learns(tmp_path):
  """The issue's bar: `python -m pipelines.local` with no arguments learns the synthetic detection task.

  The 15-minute budget is measured and printed (benchmarks/RESULTS.md records it), not asserted: CI machines
  run other tests beside this one."""
  out = tmp_path / "run"
  result = subprocess.run([sys.executable, "-m", "pipelines.local", "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  base, tuned = summary["base"]["map50"], summary["tuned"]["map50"]
  print(f"default demo: base mAP@0.5 {base:.3f}, tuned {tuned:.3f}, pipeline {summary['pipeline_seconds']:.0f}s")
  assert tuned >= 0.5, summary["tuned"]
  assert tuned >= base + 0.3, (base, tuned)
  assert summary["gate"]["passed"] is True and summary["exported_model"]
