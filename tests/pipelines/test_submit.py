"""`pipelines.submit --dry-run` builds valid run and schedule requests without touching the network."""
import json

import pytest
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pipelines import submit

VERTEX = ["--target", "vertex-tpu-v5e-8", "--project", "acme-ml", "--region", "europe-west4",
          "--pipeline-root", "gs://acme-pipelines/root", "--service-account",
          "paligemma-pipelines@acme-ml.iam.gserviceaccount.com",
          "--param", "dataset_uri=gs://acme-data/labelled/", "--param", "total_steps=200",
          "--param", "lr=0.01", "--param", "register=true", "--param", 'finetune_overrides=["lora.rank=8"]',
          "--param", "export_uri=gs://acme-models/paligemma", "--dry-run"]


def dry_run(capsys, argv) -> dict:
  assert submit.main(argv) == 0
  return json.loads(capsys.readouterr().out)


def test_vertex_run_request(capsys):
  out = dry_run(capsys, VERTEX)
  request = out["request"]
  assert request["method"] == "PipelineService.CreatePipelineJob"
  assert request["parent"] == "projects/acme-ml/locations/europe-west4"
  job = request["pipelineJob"]
  assert job["serviceAccount"] == "paligemma-pipelines@acme-ml.iam.gserviceaccount.com"
  runtime = job["runtimeConfig"]
  assert runtime["gcsOutputDirectory"] == "gs://acme-pipelines/root"
  # Values typed by the pipeline's signature.
  assert runtime["parameterValues"] == {
      "dataset_uri": "gs://acme-data/labelled/", "total_steps": 200, "lr": 0.01, "register": True,
      "finetune_overrides": ["lora.rank=8"], "export_uri": "gs://acme-models/paligemma"}
  spec = json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
  assert spec.pipeline_info.name == "paligemma-finetune"
  assert out["images"] == "europe-west4-docker.pkg.dev/acme-ml/paligemma/paligemma-pipelines-tpu:0.1.0"


def test_vertex_schedule_request(capsys):
  out = dry_run(capsys, VERTEX + ["--schedule", "0 3 * * 1"])
  request = out["request"]
  assert request["method"] == "ScheduleService.CreateSchedule"
  schedule = request["schedule"]
  assert schedule["cron"] == "0 3 * * 1" and schedule["maxConcurrentRunCount"] == "1"
  inner = schedule["createPipelineJobRequest"]
  assert inner["parent"] == "projects/acme-ml/locations/europe-west4"
  assert inner["pipelineJob"]["runtimeConfig"]["parameterValues"]["dataset_uri"] == "gs://acme-data/labelled/"
  json_format.ParseDict(inner["pipelineJob"]["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())


def test_kfp_run_and_schedule_requests(capsys):
  base = ["--target", "kfp-gke-tpu-v5e-4", "--kfp-host", "https://kfp.example.com", "--pipeline-root",
          "gs://acme-pipelines/root", "--param", "dataset_uri=gs://acme-data/labelled/", "--dry-run"]
  run = dry_run(capsys, base)["request"]
  assert run["method"] == "kfp.Client.create_run_from_pipeline_package"
  assert run["host"] == "https://kfp.example.com" and run["params"] == {"dataset_uri": "gs://acme-data/labelled/"}
  schedule = dry_run(capsys, base + ["--schedule", "30 2 * * *"])["request"]
  assert schedule["method"] == "kfp.Client.create_recurring_run"
  assert schedule["cron_expression"] == "0 30 2 * * *"  # KFP's cron starts with seconds
  assert schedule["max_concurrency"] == 1


def test_bad_parameters_are_clear_errors(capsys):
  def error(argv) -> str:  # a user's mistake: one line on stderr, exit status 2
    assert submit.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("python -m pipelines.submit: error: "), err
    return err

  assert "no parameter 'kaggle_key'" in error(VERTEX + ["--param", "kaggle_key=abc"])
  assert "--param total_steps=many: 'many' is not a valid int for config key 'total_steps'" in error(
      VERTEX + ["--param", "total_steps=many"])  # a finetune setting: checked against the config
  assert "--param eval_limit='many' is not a valid NUMBER_INTEGER" in error(VERTEX + ["--param", "eval_limit=many"])
  without_dataset = VERTEX[:VERTEX.index("dataset_uri=gs://acme-data/labelled/") - 1] + \
      VERTEX[VERTEX.index("dataset_uri=gs://acme-data/labelled/") + 1:]
  assert "needs --param for: dataset_uri" in error(without_dataset)


def test_vertex_needs_a_project_and_a_gcs_root(capsys):
  with pytest.raises(SystemExit):
    submit.main(["--target", "vertex-gpu-l4", "--pipeline-root", "gs://b/r", "--dry-run"])
  assert "--project is required" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    submit.main(["--target", "vertex-gpu-l4", "--project", "p", "--pipeline-root", "/tmp/r", "--dry-run"])
  assert "must be a gs:// URI" in capsys.readouterr().err


def task_caching(pipeline_job: dict) -> dict:
  spec = pipeline_job["pipelineSpec"]
  tasks = {**spec["root"]["dag"]["tasks"], **spec["components"]["comp-condition-1"]["dag"]["tasks"]}
  return {name: task.get("cachingOptions", {}).get("enableCache", False) for name, task in tasks.items()
          if name != "condition-1"}


def test_scheduled_and_submitted_runs_keep_the_compiled_caching(capsys):
  """The SDKs apply `enable_caching` to every task when it is set: the requests leave it unset, so convert is
  still keyed by the listing fingerprint and the uncached steps stay uncached in every scheduled run."""
  schedule = dry_run(capsys, VERTEX + ["--schedule", "0 3 * * 1"])["request"]["schedule"]
  job = schedule["createPipelineJobRequest"]["pipelineJob"]
  caching = task_caching(job)
  assert caching["convert"] is True and caching["fingerprint"] is False
  assert not any(caching[t] for t in ("champion", "gate", "export", "promote"))
  convert = job["pipelineSpec"]["root"]["dag"]["tasks"]["convert"]["inputs"]["parameters"]["source_fingerprint"]
  assert convert["taskOutputParameter"]["producerTask"] == "fingerprint"
  assert task_caching(dry_run(capsys, VERTEX)["request"]["pipelineJob"]) == caching
  assert not any(task_caching(dry_run(capsys, VERTEX + ["--no-caching"])["request"]["pipelineJob"]).values())

  base = ["--target", "kfp-gke-tpu-v5e-4", "--kfp-host", "https://kfp.example.com", "--pipeline-root",
          "gs://acme-pipelines/root", "--param", "dataset_uri=gs://acme-data/labelled/", "--dry-run"]
  assert dry_run(capsys, base + ["--schedule", "30 2 * * *"])["request"]["enable_caching"] is None
  assert dry_run(capsys, base + ["--no-caching"])["request"]["enable_caching"] is False
