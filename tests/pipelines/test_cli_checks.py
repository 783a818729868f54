"""The pipeline CLIs check their arguments before any step runs (one line naming the flag, exit 2), warn about
placeholders, and report a failed step as its name and one-line message with the full log in a file."""
import json
import logging
import os

import pytest

from components.finetune import task
from pipelines import checks, compile as compile_cli, failures, local, submit

VERTEX = ["--target", "vertex-gpu-l4", "--project", "acme", "--pipeline-root", "gs://b/root",
          "--param", "dataset_uri=gs://d/", "--dry-run"]


def one_error_line(capsys, prog: str) -> str:
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and err.startswith(f"python -m {prog}: error: "), err
  return err


@pytest.fixture
def no_run(monkeypatch):
  """pipelines.local must stop before the demo's inputs and before the first step."""
  def too_late(*args, **kwargs):
    raise AssertionError("a step (or the demo's inputs) started before the arguments were checked")

  monkeypatch.setattr(local, "prepare_demo", too_late)
  monkeypatch.setattr(local, "run", too_late)


@pytest.mark.parametrize("argv, named", [
    (["--format", "cocoo", "--dataset", "."], "argument --format: invalid choice: 'cocoo'"),
    (["--set", "lrr=1"], "--set lrr=1: unknown config key 'lrr' (did you mean 'optimizer.lr'?"),
    (["--batch", "0"], "argument --batch: must be a whole number above 0, not 0"),
    (["--lr", "-1"], "argument --lr: must be above 0, not -1"),
    (["--dataset", "/no/such/dir", "--format", "coco"], "--dataset /no/such/dir: no such file or directory"),
    (["--config", "nope"], "--config nope: no finetune config named 'nope'"),
    (["--steps", "3", "--epochs", "1"], "(--steps 3 and --epochs 1.0)"),
    (["--batch", "7", "--set", "grad_accum_steps=2"], "batch_size 7 is not divisible by grad_accum_steps"),
])
def test_local_mistakes_fail_before_any_step_naming_the_flag(argv, named, tmp_path, capsys, no_run):
  try:
    code = local.main([*argv, "--output", str(tmp_path / "run")])
  except SystemExit as e:  # the parser's own checks exit from parse_args
    code = e.code
  assert code == 2
  assert named in one_error_line(capsys, "pipelines.local")


def test_finetune_errors_name_the_local_flags():
  with pytest.raises(ValueError, match=r"^--batch 7: config key|batch_size 7 is not divisible"):
    local.check_finetune_settings("notebook_attention_sgd", ["grad_accum_steps=2"], batch_size=7,
                                  flag_names=local.FINETUNE_FLAGS)
  settings = task.settings_for(overrides=["lr=1"], flag_names=local.FINETUNE_FLAGS, batch_size=64, lr=0.1)
  assert [s.source for s in settings] == ["--batch 64", "--lr 0.1", "--set lr=1"]
  too_few = task.too_few_examples(type("E", (), dict(batch_size=64, count=32, split="train", data_dir="/d"))(),
                                  settings, "notebook_attention_sgd")
  assert str(too_few).startswith("--batch 64: the batch size (64) is larger than the 32 examples of split 'train'")
  # From inside the step, the component's parameter is named; pipelines.local says its own flag.
  step = failures.StepFailed("finetune", "parameter batch_size: the batch size (64) is larger ...", "/r/pipeline.log")
  assert str(local.in_flag_names(step)) == ("step 'finetune' failed: --batch: the batch size (64) is larger ... "
                                            "(full log: /r/pipeline.log)")


def test_a_failed_step_is_its_name_and_its_own_last_message(tmp_path, capsys, caplog):
  caplog.set_level(logging.INFO)  # as pipelines.local's: the runner's "Executing task" records are INFO
  path = str(tmp_path / "pipeline.log")
  with failures.StepLog(path) as steps:
    logging.getLogger().info("Executing task \x1b[96m'download'\x1b[0m")
    print("fetched 2 files")
    logging.getLogger().info("Executing task 'convert'")
    print("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
          "components.convert.core.ConversionError: no COCO .json in /data; expected annotations/instances_*.json")
    print("\nsome runner text after it")
    logging.getLogger().error("Task 'convert' finished with status \x1b[91mFAILURE\x1b[0m")
    error = steps.failure(RuntimeError("Pipeline 'x' finished with status FAILURE. Inner task failed: ."))
  assert isinstance(error, failures.StepFailed)
  assert str(error) == (f"step 'convert' failed: no COCO .json in /data; expected annotations/instances_*.json "
                        f"(full log: {path})")
  log = open(path).read()
  assert "fetched 2 files" in log and "Traceback" in log and "Executing task 'convert'" in log
  assert "fetched 2 files" in capsys.readouterr().out  # still shown: the log is a copy


def test_one_line_falls_back_to_error_lines_then_the_last_line():
  assert failures.one_line(["x", "python -m y: error: --flag bad", ""]) == "--flag bad"
  assert failures.one_line(["first", "last words", "  "]) == "last words"
  runner = RuntimeError("no step failed")
  with failures.StepLog(os.devnull) as steps:
    assert steps.failure(runner) is runner  # not a step's failure: the runner's own error stands


@pytest.mark.parametrize("expression", ["0 3 * * 1", "*/30 * * * *", "0 0 1 jan *", "15 2 1-7 * mon-fri",
                                        "TZ=Europe/Paris 0 3 * * 1", "0 3 * * 0,6"])
def test_cron_accepts_five_fields(expression):
  checks.cron("--schedule", expression)


@pytest.mark.parametrize("expression, said", [
    ("every monday", "is not a cron expression: it needs 5 fields"),
    ("0 3 * *", "is not a cron expression"),
    ("0 25 * * *", "'25' is not a valid hour (0-23)"),
    ("0 3 * * 8", "'8' is not a valid day of week"),
    ("*/0 * * * *", "'*/0' is not a valid minute"),
])
def test_cron_rejects_with_the_format(expression, said):
  with pytest.raises(ValueError, match="MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK") as caught:
    checks.cron("--schedule", expression)
  assert str(caught.value).startswith(f"--schedule {expression!r}") and said in str(caught.value)


def test_submit_rejects_a_bad_schedule_and_bad_finetune_settings_before_compiling(capsys, monkeypatch):
  def too_late(*args, **kwargs):
    raise AssertionError("compiled before the arguments were checked")

  monkeypatch.setattr(submit, "compile_pipeline", too_late)
  with pytest.raises(SystemExit) as exited:
    submit.main(VERTEX + ["--schedule", "every monday"])
  assert exited.value.code == 2 and "--schedule 'every monday'" in one_error_line(capsys, "pipelines.submit")
  for argv, said in ((["--set", "lrr=1"], "--set lrr=1: unknown config key 'lrr'"),
                     (["--param", "batch_size=x"], "--param batch_size=x: 'x' is not a valid int"),
                     (["--param", "finetune_config=nope"], "--param finetune_config=nope: no finetune config"),
                     (["--param", "dataset_format=cocoo"], "--param dataset_format=cocoo: not a dataset format"),
                     (["--param", 'finetune_overrides=["a=1"]', "--set", "lr=1"], "given twice")):
    assert submit.main(VERTEX + argv) == 2
    assert said in one_error_line(capsys, "pipelines.submit")


def test_submit_dry_run_shows_what_to_check_first_and_the_spec_last(capsys):
  assert submit.main(VERTEX + ["--service-account", "sa@acme.iam.gserviceaccount.com", "--set", "lora.rank=8",
                               "--schedule", "0 3 * * 1"]) == 0
  text = capsys.readouterr().out
  out = json.loads(text)
  assert list(out)[:9] == ["target", "images", "project", "region", "pipeline_root", "service_account", "schedule",
                           "caching", "parameters"]
  assert out["service_account"] == "sa@acme.iam.gserviceaccount.com" and out["schedule"] == "0 3 * * 1"
  assert out["parameters"]["finetune_overrides"] == ["lora.rank=8"]
  job = out["request"]["schedule"]["createPipelineJobRequest"]["pipelineJob"]
  assert list(job)[-1] == "pipelineSpec" and job["runtimeConfig"]["parameterValues"]["finetune_overrides"] == \
      ["lora.rank=8"]
  assert text.index('"pipelineSpec"') > text.index('"serviceAccount"') > text.index('"parameters"')


def test_placeholder_registry_is_warned_by_compile_and_dry_run_and_refused_when_sending(tmp_path, capsys):
  assert compile_cli.main(["--target", "kfp-gke-tpu-v5e-4", "--output", str(tmp_path / "p.yaml")]) == 0
  err = capsys.readouterr().err
  assert "warning: no --image-registry (or --project) given: the YAML names the placeholder image " \
         "paligemma/paligemma-pipelines-tpu:" in err
  assert compile_cli.main(["--target", "kfp-gke-tpu-v5e-4", "--image-registry", "europe-docker.pkg.dev/p/r",
                           "--output", str(tmp_path / "q.yaml")]) == 0
  assert "warning" not in capsys.readouterr().err
  kfp = ["--target", "kfp-gke-tpu-v5e-4", "--pipeline-root", "gs://b/root", "--param", "dataset_uri=gs://d/"]
  with pytest.raises(SystemExit) as exited:
    submit.main(kfp + ["--kfp-host", "https://kfp.example"])
  assert exited.value.code == 2 and "placeholder image" in one_error_line(capsys, "pipelines.submit")
  assert submit.main(kfp + ["--dry-run"]) == 0
  assert "warning: no --image-registry" in capsys.readouterr().err


def test_unknown_target_is_one_line(capsys):
  with pytest.raises(SystemExit) as exited:
    compile_cli.main(["--target", "vertex-tpu-v9"])
  assert exited.value.code == 2
  assert "argument --target: unknown target 'vertex-tpu-v9'" in one_error_line(capsys, "pipelines.compile")
