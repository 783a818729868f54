"""The real DAG, every step, under the KFP local runner on CPU (tiny settings: the mechanics, not accuracy).

1. The compiled `local` YAML, loaded back with `kfp.components.load_component_from_file`, completes under a
   `minio://` pipeline root (every step reads and writes the local path KFP gives for it). The
   champion was promoted "yesterday" on a smaller dataset; today's run re-scores it on today's grown
   validation split, and with a margin no model can clear the gate stops the run before export and says why,
   with every score and the split they came from.
2. `python -m pipelines.local` end to end: `--epochs 2` trains two epochs although the demo config sets
   total_steps; with no champion yet and any improvement accepted the gate passes, the model is exported and
   becomes the champion (with today's split), and summary.json says so.
"""
import json
import os
import re
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::FutureWarning")]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_DEMO_LINES = 150  # issue 14: the demo's whole output
TINY = dict(total_steps=2, batch_size=8, eval_limit=4)  # batch: a multiple of the 8 test devices


@pytest.fixture
def minio_root(tmp_path, monkeypatch):
  """A `minio://` pipeline root, as a plain KFP cluster has by default, under the local runner.

  The local runner itself only makes local artifact URIs, so its output artifacts are renamed to
  `minio://mlpipeline/...`; and KFP's local path for them (`artifact.path`, `/minio/...`, which the KFP
  launcher fills and uploads) is pointed at a temporary folder, in this process and (through a
  sitecustomize on PYTHONPATH) in every task's. Returns (local root the runner is given, the mount)."""
  from kfp.dsl.types import artifact_types
  from kfp.local import executor_input_utils

  root, mount, site = tmp_path / "root", tmp_path / "mount", tmp_path / "site"
  site.mkdir()
  (site / "sitecustomize.py").write_text(
      "import os\nfrom kfp.dsl.types import artifact_types\n"
      "artifact_types._MINIO_LOCAL_MOUNT_PREFIX = os.environ['TEST_MINIO_MOUNT']\n")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
  monkeypatch.setenv("TEST_MINIO_MOUNT", f"{mount}/")
  monkeypatch.setattr(artifact_types, "_MINIO_LOCAL_MOUNT_PREFIX", f"{mount}/")
  local_artifacts = executor_input_utils.artifact_type_schema_to_artifact_list

  def minio_artifacts(name, artifact_type, task_root):
    artifacts = local_artifacts(name, artifact_type, task_root)
    for artifact in artifacts.artifacts:
      artifact.uri = "minio://mlpipeline/" + os.path.relpath(artifact.uri, root)
    return artifacts

  monkeypatch.setattr(executor_input_utils, "artifact_type_schema_to_artifact_list", minio_artifacts)
  monkeypatch.chdir(tmp_path)  # where a step that took the URI for a path would make a folder `minio:`
  return root, mount / "mlpipeline"


def test_compiled_local_yaml_runs_under_the_local_runner_with_a_minio_root(tmp_path, grow_valid_split, minio_root):
  import kfp.components
  import kfp.local

  from components.convert import ConvertConfig, convert
  from pipelines import kfp_local_fix
  from pipelines.compile import compile_pipeline
  from pipelines.local import prepare_demo

  package = compile_pipeline("local", str(tmp_path / "pipeline.yaml"))
  pipeline = kfp.components.load_component_from_file(package)
  arguments = prepare_demo(str(tmp_path / "inputs"), train_images=8, valid_images=4)
  # Yesterday: the champion (the demo's model directory) was promoted on the data as it was then.
  yesterday = convert(ConvertConfig(input=arguments["dataset_uri"], format="coco", task="detect",
                                    output=str(tmp_path / "yesterday"), workers=1, progress=False))
  (tmp_path / "models").mkdir()
  record = {"model_uri": os.path.dirname(arguments["model_source"]), "metric": "map50", "value": 0.93,
            "task": "detect", "run_id": "run-0", "date": "2026-11-01T00:00:00+00:00",
            "split": {"name": "valid", "fingerprint": yesterday["split_fingerprints"]["valid"], "examples": 4}}
  (tmp_path / "models" / "champion.json").write_text(json.dumps(record))
  added = grow_valid_split(arguments["dataset_uri"], 2)  # today: two more labelled validation images

  root, mount = minio_root
  kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
  kfp_local_fix.install()
  task = pipeline(**{**arguments, **TINY, "eval_limit": 0, "export_uri": str(tmp_path / "models"),
                     "min_improvement": 1.0})  # no mAP beats anything by more than 1

  with open(task.output.path) as f:
    decision = json.load(f)
  # Every step read and wrote its artifacts where KFP's launcher would upload them from: the minio mount.
  run_dir = mount / os.listdir(mount)[0]
  with open(run_dir / "convert" / "dataset" / "report.json") as f:
    today = json.load(f)
  assert today["counts"]["valid"] == 6 and today["split_fingerprints"]["valid"] != record["split"]["fingerprint"]

  # The champion was re-scored on today's split, with today's new images, by the evaluate core.
  with open(run_dir / "rescore" / "evaluation" / "predictions.jsonl") as f:
    scored = {json.loads(line)["image"] for line in f}
  assert len(scored) == 6 and {f"images/{os.path.splitext(a)[0]}.jpg" for a in added} <= scored  # written as JPEG
  rescored = decision["champion_metrics"]["map50"]
  assert decision["champion_rescored"] == rescored and decision["champion_stored"] == 0.93
  # The champion is the base model's own weights: same split, same settings, so exactly the base's score.
  assert rescored == decision["base"]
  assert decision["passed"] is False and decision["reference_name"] == "champion" and decision["reference"] == rescored
  assert f"does not beat the champion's {rescored:.4f} by more than 1.0000 on this run's valid split" in \
      decision["reason"]
  markdown = (run_dir / "gate" / "explanation").read_text()
  for text in (f"| tuned | {decision['tuned']:.4f} | this run's split |",
               f"| base | {decision['base']:.4f} | this run's split |",
               f"re-scored | {rescored:.4f} | this run's split |", "stored when promoted | 0.9300 |",
               f"fingerprint `{today['split_fingerprints']['valid']}`, 6 examples", "not this run's split"):
    assert text in markdown, markdown
  for which in ("base_metrics", "tuned_metrics"):
    assert {"map", "map50", "map75"} <= set(decision[which])
  assert os.path.exists(decision["tuned_report"])
  assert os.listdir(tmp_path / "models") == ["champion.json"]
  assert json.loads((tmp_path / "models" / "champion.json").read_text()) == record
  local_run = root / os.listdir(root)[0]  # the local runner keeps every task's executor output here
  assert {"fingerprint", "download", "convert", "finetune", "evaluate", "evaluate-2", "champion", "rescore",
          "gate"} <= set(os.listdir(local_run))
  assert {"download", "convert", "finetune", "evaluate", "evaluate-2", "rescore", "gate"} <= set(os.listdir(run_dir))
  with open(run_dir / "finetune" / "tuned_model" / "config.json") as f:
    assert json.load(f)["total_steps"] == 2  # the pipeline parameter reached the trainer
  assert json.loads((run_dir / "download" / "model_dir" / "model.json").read_text())["name"]
  assert {"train.jsonl", "valid.jsonl", "test.jsonl", "images", "records"} <= set(
      os.listdir(run_dir / "convert" / "dataset"))
  assert not (tmp_path / "minio:").exists() and not (root / "minio:").exists()


def test_pipelines_local_end_to_end(tmp_path):
  out = tmp_path / "run"
  champion = tmp_path / "champion.json"  # none yet: the base model is the reference
  result = subprocess.run(
      [sys.executable, "-m", "pipelines.local", "--output", str(out), "--train-images", "8", "--valid-images", "4",
       "--epochs", "2", "--batch", "8", "--eval-limit", "4", "--champion", str(champion),
       "--min-improvement", "-1"],  # any model passes: exercise export and promotion
      cwd=REPO, capture_output=True, text=True, timeout=1800)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  run_dir = out / "artifacts" / os.listdir(out / "artifacts")[0]
  workdir, dataset = run_dir / "finetune" / "tuned_model", run_dir / "convert" / "dataset"
  config = json.loads((workdir / "config.json").read_text())
  assert (config["epochs"], config["total_steps"]) == (2.0, None)  # --epochs replaced the demo config's steps
  n_train = json.loads((dataset / "report.json").read_text())["counts"]["train"]
  steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert max(steps) == 2 * n_train // 8 > 0  # two epochs of batch 8
  assert {"map", "map50", "map75"} <= set(summary["base"]) and {"map50"} <= set(summary["tuned"])
  assert summary["gate"]["passed"] is True and summary["gate"]["metric"] == "map50"
  assert summary["gate"]["reference_name"] == "base model" and "beats the base model's" in summary["gate"]["reason"]
  assert os.path.exists(summary["report"])
  exported = summary["exported_model"]
  run_name = os.listdir(out / "artifacts")[0]
  assert exported == str(out / "models" / run_name)  # EXPORT_URI/<pipeline run name>, as on Vertex AI
  assert os.path.exists(os.path.join(exported, "manifest.json"))
  assert any(name.endswith(".npz") for name in os.listdir(exported))
  record = json.loads(champion.read_text())
  assert record["model_uri"] == exported and record["value"] == summary["tuned"]["map50"]
  with open(os.path.join(out, "artifacts", run_name, "convert", "dataset", "report.json")) as f:
    report = json.load(f)
  assert record["split"] == {"name": "valid", "fingerprint": report["split_fingerprints"]["valid"], "examples": 4}
  assert f"exported model: {exported}" in result.stdout
  # Each task's wall time, from the local runner's own log records (the --smoke timing).
  assert {"download", "convert", "finetune", "evaluate", "gate", "export"} <= set(summary["step_seconds"])
  assert all(seconds >= 0 for seconds in summary["step_seconds"].values()) and "seconds per step:" in result.stdout


def test_default_demo_learns(tmp_path):
  """The issue's bar: `python -m pipelines.local` with no arguments learns the synthetic detection task; its
  output, in a file (as in a CI log or `| tee`), is short (< MAX_DEMO_LINES lines) and live: finetune's
  progress lines reach the file while it trains, not all at once when the step ends.

  The 15-minute budget is measured and printed (benchmarks/RESULTS.md records it), not asserted: CI machines
  run other tests beside this one."""
  out, log_path = tmp_path / "run", tmp_path / "demo.log"
  first_progress = finetune_done = None
  with open(log_path, "w") as log:
    process = subprocess.Popen([sys.executable, "-m", "pipelines.local", "--output", str(out)], cwd=REPO,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
      while process.poll() is None:
        text, now = log_path.read_text(), time.monotonic()
        if first_progress is None and re.search(r"step \d+/\d+ \| loss", text):
          first_progress = now
        if finetune_done is None and re.search(r"Task \S*finetune\S* finished", text):
          finetune_done = now
        time.sleep(0.5)
    finally:
      if process.poll() is None:
        process.kill()
  text = log_path.read_text()
  assert process.returncode == 0, text[-3000:]
  summary = json.loads((out / "summary.json").read_text())
  base, tuned = summary["base"]["map50"], summary["tuned"]["map50"]
  lines = text.splitlines()
  print(f"default demo: base mAP@0.5 {base:.3f}, tuned {tuned:.3f}, pipeline {summary['pipeline_seconds']:.0f}s, "
        f"{len(lines)} lines of output")
  assert tuned >= 0.5, summary["tuned"]
  assert tuned >= base + 0.3, (base, tuned)
  assert summary["gate"]["passed"] is True and summary["exported_model"]
  assert len(lines) < MAX_DEMO_LINES, text
  assert "compiling the train step" in text
  assert first_progress is not None and finetune_done is not None
  assert finetune_done - first_progress > 10, "finetune's progress reached the file only when the step ended"
  assert not re.search(r"libtpu|INVALID_ARGUMENT|Given directory is read only|executor_input", text)
  assert os.path.exists(summary["log"])
