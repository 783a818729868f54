"""`python -m pipelines.local`'s finetune settings: what the DAG hands the trainer, checked before anything runs
(the end-to-end run with `--epochs 2` is in test_local_run.py, slow)."""
import json
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


def own_data_arguments(argv, output, monkeypatch):
  """pipeline_arguments with the random model's writing stubbed (its model.json as make_random_model writes)."""
  from pipelines import synthetic

  def fake_random_model(out_dir, name, seed=0):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "model.json"), "w") as f:
      json.dump({"name": name, "checkpoint": f"{name}.npz", "init": "random", "seed": seed}, f)
    return os.path.join(out_dir, f"{name}.npz")

  monkeypatch.setattr(synthetic, "make_random_model", fake_random_model)
  monkeypatch.setattr(local, "prepare_demo", lambda *a, **k: pytest.fail("own data must not write the demo's inputs"))
  return local.pipeline_arguments(local.parse_args(argv), str(output))


def test_own_data_with_a_small_config_and_random_init(tmp_path, monkeypatch):
  (tmp_path / "coco").mkdir()
  arguments = own_data_arguments(["--dataset", str(tmp_path / "coco"), "--model", "small-v2", "--init", "random",
                                  "--steps", "20"], tmp_path, monkeypatch)
  assert arguments["model"] == "small-v2" and arguments["model_source"] == str(tmp_path / "inputs/model/small-v2.npz")
  assert arguments["text_len"] == 0  # the finetune step sizes it from the converted training examples
  assert "max_decode_len" not in arguments and "eval_limit" not in arguments  # evaluate: from the references
  assert not (tmp_path / "inputs" / "dataset").exists()
  assert local.model_init(arguments) == {"init": "random", "seed": local_demo.DEMO["seed"], "model": "small-v2"}


def test_own_data_keeps_a_text_len_the_user_forces(tmp_path, monkeypatch):
  data = str(tmp_path)
  arguments = own_data_arguments(["--dataset", data, "--model", "demo-v2", "--init", "random", "--text-len", "24"],
                                 tmp_path, monkeypatch)
  assert arguments["text_len"] == 24
  arguments = own_data_arguments(["--dataset", data, "--set", "text_len=32"], tmp_path, monkeypatch)
  assert "text_len" not in arguments and arguments["finetune_overrides"] == ["text_len=32"]  # not set twice
  assert arguments["model"] == local_demo.DEMO["model"]  # no --model: the demo's model, random, on the user's data


def test_a_small_config_without_init_random_says_which_flag(capsys, tmp_path):
  with pytest.raises(SystemExit) as e:
    local.parse_args(["--dataset", str(tmp_path), "--model", "small-v2"])
  assert e.value.code == 2
  assert "--model small-v2 is a configuration, not a released checkpoint: add --init random" in capsys.readouterr().err
  assert local.init_problem("paligemma2-3b-pt-224", "random", "") is None  # any configuration may start random
  assert "--init random needs --model" in local.init_problem(None, "random", "")
  assert "needs a configuration name" in local.init_problem("gs://b/m.npz", "random", "")
  assert local.init_problem("small-v2", "pretrained", "gs://b/small.npz") is None  # weights given
  assert "use small-v2 or demo-v2" in local.init_problem("tiny-v2", "random", "")  # vocab 300: no <loc> pieces


def test_convert_summary_lists_rejected_and_repaired_rows(tmp_path):
  report_dir = tmp_path / "run" / "convert" / "dataset"
  report_dir.mkdir(parents=True)
  rejected = [{"file": "train/_annotations.coco.json", "row": i, "image": f"img_{i}.jpg", "action": "rejected",
               "reason": "box outside the image"} for i in range(7)]
  repaired = [{"file": "train/_annotations.coco.json", "row": 9, "image": "img_9.jpg", "action": "repaired",
               "reason": "duplicate box dropped"}]
  (report_dir / "report.json").write_text(json.dumps(
      {"counts": {"train": 30, "valid": 4, "test": 0}, "rejected": rejected, "repaired": repaired, "warnings": []}))
  brief = local.convert_summary(str(tmp_path / "run"))
  assert brief["report"] == str(report_dir / "report.json")
  assert (brief["rejected"], brief["repaired"]) == (7, 1)
  assert brief["first_rejected"] == rejected[:local.MAX_LISTED_ROWS] and brief["first_repaired"] == repaired
  assert local._row_text(rejected[0]) == "train/_annotations.coco.json, 0, img_0.jpg: box outside the image"
  assert local.convert_summary(str(tmp_path / "elsewhere")) is None


def test_the_summary_keeps_the_data_and_training_steps_warnings_by_step():
  import logging

  times = local._StepTimes()
  warnings = local._StepWarnings(times)

  def task(name, *lines):
    times.filter(logging.LogRecord("root", logging.INFO, "", 0, f"Executing task \x1b[96m'{name}'\x1b[0m", (), None))
    for line in lines:
      warnings(line)

  task("convert", "wrote DIR: 30 train\n", "WARNING: split 'test' is empty\n")
  task("evaluate", "WARNING: 8 answers reached --max-decode-len 16\n")  # the model's answers: its report has them
  task("finetune", *[f"WARNING: overfitting: {i}\n" for i in range(12)])
  assert warnings.warnings[0] == {"step": "convert", "message": "split 'test' is empty"}
  assert [w["step"] for w in warnings.warnings] == ["convert"] + ["finetune"] * local._StepWarnings.MAX_PER_STEP
