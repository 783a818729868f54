"""Compile and submit the pipeline: one run now, or a schedule of runs.

  python -m pipelines.submit --target vertex-tpu-v5e-8 --project P --region us-central1 \
      --pipeline-root gs://BUCKET/pipeline-root \
      --param dataset_uri=gs://BUCKET/labelled/ --param export_uri=gs://BUCKET/models [--schedule "0 3 * * 1"] \
      [--set optimizer.lr=1e-4]   # a finetune config override (the finetune_overrides parameter)
  python -m pipelines.submit --target kfp-gke-tpu-v5e-4 --kfp-host https://HOST ... [--schedule CRON]
  ... --dry-run      # print the request that would be sent; nothing leaves the machine

Checked before anything is compiled or sent: the flags, the cron syntax of --schedule, a placeholder image
registry (an error when sending, a warning in a dry run), and, from the --param values, the finetune config
the run would train with (a shipped config name, or a .py that exists here), each error naming its flag.
The dry run prints what to check first (target, images, project, region, pipeline root, service account,
schedule, parameters), then the request, the compiled pipeline spec last.

Vertex targets go through `aiplatform.PipelineJob` (`submit` / `create_schedule`), KFP targets through
`kfp.Client` (`create_run_from_pipeline_package` / `create_recurring_run`). Credentials come from the
environment (application-default credentials, the KFP client's own auth), never from `--param`.

Caching: the requests leave each task's compiled caching setting alone (`enable_caching` unset), so the
steps that read the dataset prefix or the champion record stay uncached (pipelines/dag.py); both SDKs would
otherwise apply one value to every task. `--no-caching` turns caching off for every task.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

from components.common import cli
from components.convert.readers import FORMATS
from pipelines import checks, images
from pipelines.compile import (add_target_arguments, compile_pipeline, load_documents, placeholder_image_warning,
                               registry_for)
from pipelines.targets import get_target

PROG = "python -m pipelines.submit"

# How a value given on the command line is read, per KFP parameter type.
_PARSERS = {
    "STRING": str,
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": float,
    "BOOLEAN": lambda text: {"true": True, "false": False}[text.lower()],
    "LIST": json.loads,
    "STRUCT": json.loads,
}


def parameter_values(pipeline_yaml: str, pairs: list[str]) -> dict:
  """`key=value` pairs typed by the compiled pipeline's signature; unknown keys are an error."""
  spec, _ = load_documents(pipeline_yaml)
  declared = spec["root"]["inputDefinitions"]["parameters"]
  values = {}
  for pair in pairs:
    key, sep, text = pair.partition("=")
    if not sep:
      raise ValueError(f"--param {pair!r} is not key=value")
    if key not in declared:
      raise ValueError(f"the pipeline has no parameter {key!r}; it has: {', '.join(sorted(declared))}")
    kind = declared[key]["parameterType"]
    try:
      values[key] = _PARSERS[kind](text)
    except (ValueError, KeyError) as e:
      raise ValueError(f"--param {key}={text!r} is not a valid {kind}: {e}") from None
  missing = [k for k, v in declared.items() if not v.get("isOptional") and k not in values]
  if missing:
    raise ValueError(f"the pipeline needs --param for: {', '.join(missing)}")
  return values


def check_finetune(params: list[str], overrides: list[str]) -> None:
  """Builds the finetune config the run would train with (components/finetune/task.py; no training) from the
  finetune settings among the `--param` texts and the `--set` overrides, before anything is compiled, when the
  config is a shipped name or a file here (a path inside the image cannot be read here). Raises
  config.ConfigError or ValueError naming the --param or --set that is wrong."""
  from components.finetune import config as config_lib, task

  given = dict(pair.partition("=")[::2] for pair in params if "=" in pair)
  if given.get("dataset_format", "coco") not in FORMATS:
    raise ValueError(f"--param dataset_format={given['dataset_format']}: not a dataset format; choose one of "
                     f"{', '.join(FORMATS)} (components.convert --format)")
  config = given.get("finetune_config", "notebook_attention_sgd")
  if config.endswith(".py") and not os.path.exists(config):
    return
  settings = [config_lib.parse_assignment(f"{key}={given[name]}", f"--param {name}={given[name]}")
              for name, key in task.SETTINGS.items() if name in given]
  if "finetune_overrides" in given:
    if overrides:
      raise ValueError("finetune overrides are given twice: by --param finetune_overrides and by --set; use --set")
    try:
      listed = json.loads(given["finetune_overrides"])
    except ValueError:
      listed = None
    if not isinstance(listed, list):
      raise ValueError(f"--param finetune_overrides={given['finetune_overrides']} is not a JSON list of "
                       "\"KEY=VALUE\" texts; or give each as --set KEY=VALUE")
    settings += [config_lib.parse_assignment(str(text), f"--param finetune_overrides item {text}") for text in listed]
  settings += [config_lib.parse_assignment(text, f"--set {text}") for text in overrides]
  try:
    config_lib.load_config(task.config_path(config), settings)
  except FileNotFoundError as e:  # no shipped config of that name
    raise ValueError(f"--param finetune_config={config}: {e}") from None


def summary(args, target, registry: str, values: dict) -> dict:
  """What a user checks in a dry run, before the request itself."""
  return {"target": args.target, "images": images.image_uri(target.image_flavor, registry),
          "project": args.project, "region": args.region, "pipeline_root": args.pipeline_root,
          "service_account": args.service_account or None, "schedule": args.schedule,
          "caching": "each step's compiled setting" if args.caching is None else args.caching,
          "parameters": values}


def spec_last(request: dict) -> dict:
  """The request with the compiled pipeline spec (tens of KB) moved to the end of each object that holds it."""
  if not isinstance(request, dict):
    return request
  ordered = {k: spec_last(v) for k, v in request.items() if k != "pipelineSpec"}
  if "pipelineSpec" in request:
    ordered["pipelineSpec"] = request["pipelineSpec"]
  return ordered


def vertex_request(args, pipeline_yaml: str, values: dict, dry_run: bool) -> tuple[dict, object]:
  """The Vertex AI request (as a dict) and the SDK object that sends it."""
  from google.cloud import aiplatform

  credentials = None
  if dry_run:  # builds the request locally; no credentials needed, nothing is sent
    from google.auth.credentials import AnonymousCredentials
    credentials = AnonymousCredentials()
  job = aiplatform.PipelineJob(
      display_name=args.display_name, template_path=pipeline_yaml, pipeline_root=args.pipeline_root,
      parameter_values=values, project=args.project, location=args.region, enable_caching=args.caching,
      credentials=credentials)
  parent = f"projects/{args.project}/locations/{args.region}"
  pipeline_job = job.to_dict()
  if args.service_account:
    pipeline_job["serviceAccount"] = args.service_account
  if not args.schedule:
    return {"method": "PipelineService.CreatePipelineJob", "parent": parent, "pipelineJob": pipeline_job}, job
  schedule = {"displayName": f"{args.display_name}-schedule", "cron": args.schedule,
              "maxConcurrentRunCount": "1",
              "createPipelineJobRequest": {"parent": parent, "pipelineJob": pipeline_job}}
  return {"method": "ScheduleService.CreateSchedule", "parent": parent, "schedule": schedule}, job


def kfp_cron(cron: str) -> str:
  """KFP's cron has a leading seconds field; accept the usual five fields too."""
  return f"0 {cron}" if len(cron.split()) == 5 else cron


def kfp_request(args, pipeline_yaml: str, values: dict) -> dict:
  common = {"pipeline_package_path": pipeline_yaml, "params": values, "pipeline_root": args.pipeline_root,
            "enable_caching": args.caching, "service_account": args.service_account or None}
  if args.schedule:
    return {"method": "kfp.Client.create_recurring_run", "host": args.kfp_host,
            "experiment_name": args.experiment, "job_name": f"{args.display_name}-schedule",
            "cron_expression": kfp_cron(args.schedule), "max_concurrency": 1, **common}
  return {"method": "kfp.Client.create_run_from_pipeline_package", "host": args.kfp_host,
          "experiment_name": args.experiment, "run_name": args.display_name, **common}


def send_kfp(request: dict) -> str:
  import kfp

  client = kfp.Client(host=request["host"])
  if request["method"].endswith("create_recurring_run"):
    experiment = client.create_experiment(request["experiment_name"])
    run = client.create_recurring_run(
        experiment_id=experiment.experiment_id, job_name=request["job_name"],
        cron_expression=request["cron_expression"], max_concurrency=request["max_concurrency"],
        params=request["params"], pipeline_package_path=request["pipeline_package_path"],
        pipeline_root=request["pipeline_root"], enable_caching=request["enable_caching"],
        service_account=request["service_account"])
    return f"recurring run {run.recurring_run_id}"
  result = client.create_run_from_pipeline_package(
      request["pipeline_package_path"], arguments=request["params"], run_name=request["run_name"],
      experiment_name=request["experiment_name"], pipeline_root=request["pipeline_root"],
      enable_caching=request["enable_caching"], service_account=request["service_account"])
  return f"run {result.run_id}"


def parse_args(argv=None) -> argparse.Namespace:
  p = cli.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  add_target_arguments(p)
  p.add_argument("--project", help="Google Cloud project (Vertex targets; also names the image registry)")
  p.add_argument("--region", default="us-central1", help="Vertex AI region, and the image registry's "
                 "(default us-central1)")
  p.add_argument("--pipeline-root", required=True, help="gs:// (Vertex) or the KFP artifact root")
  p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                 help="a pipeline parameter (repeatable); lists as JSON")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a finetune config override, e.g. --set lora.rank=8 (repeatable; the finetune_overrides "
                 "parameter)")
  p.add_argument("--schedule", help="cron expression, 5 fields MINUTE HOUR DAY MONTH WEEKDAY (e.g. '0 3 * * 1': "
                 "Mondays 03:00): create a schedule instead of one run")
  p.add_argument("--service-account", default="", help="the identity the run uses (infra/ creates one)")
  p.add_argument("--display-name", help="name of the run or schedule (default: the pipeline's name)")
  p.add_argument("--kfp-host", help="KFP API endpoint (KFP targets)")
  p.add_argument("--experiment", help="KFP experiment (default: the pipeline's name)")
  p.add_argument("--no-caching", dest="caching", action="store_const", const=False, default=None,
                 help="run every step afresh (default: each step's compiled setting; see docs/PIPELINES.md)")
  p.add_argument("--dry-run", action="store_true", help="print the request and exit without sending it")
  p.add_argument("--keep-yaml", help="also write the compiled pipeline here")
  args = p.parse_args(argv)
  target = get_target(args.target)
  if target.platform == "local":
    p.error("the local target runs with `python -m pipelines.local`, not submit")
  if target.platform == "vertex" and not args.project:
    p.error(f"--project is required for {args.target}")
  if target.platform == "vertex" and not args.pipeline_root.startswith("gs://"):
    p.error("--pipeline-root must be a gs:// URI for Vertex AI")
  if target.platform == "kfp" and not (args.kfp_host or args.dry_run):
    p.error(f"--kfp-host is required for {args.target}")
  if args.schedule:
    try:
      checks.cron("--schedule", args.schedule)
    except ValueError as e:
      p.error(str(e))
  args.registry = registry_for(args.image_registry, args.project, args.region)
  if (warning := placeholder_image_warning(target, args.registry)) and not args.dry_run:
    p.error(warning)
  elif warning:
    print(f"{PROG}: warning: {warning}", file=sys.stderr)
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  from components.finetune.config import ConfigError
  from pipelines.dag import PIPELINE_NAME

  args.display_name = args.display_name or PIPELINE_NAME
  args.experiment = args.experiment or PIPELINE_NAME
  target, registry = get_target(args.target), args.registry
  try:
    check_finetune(args.param, args.set)
  except (ValueError, ConfigError) as e:
    return cli.report(PROG, str(e))
  with tempfile.TemporaryDirectory() as tmp:
    pipeline_yaml = compile_pipeline(args.target, args.keep_yaml or os.path.join(tmp, "pipeline.yaml"), registry)
    try:
      values = parameter_values(pipeline_yaml, args.param)
    except ValueError as e:
      return cli.report(PROG, str(e))
    if args.set:
      values["finetune_overrides"] = list(args.set)
    if target.platform == "vertex":
      request, job = vertex_request(args, pipeline_yaml, values, args.dry_run)
    else:
      request, job = kfp_request(args, pipeline_yaml, values), None
    if args.dry_run:  # what a user checks first; the compiled spec last
      print(json.dumps({**summary(args, target, registry, values), "request": spec_last(request)}, indent=2,
                       default=str))
      return 0
    if job is None:
      print(f"submitted {send_kfp(request)} to {args.kfp_host}")
    elif args.schedule:
      schedule = job.create_schedule(cron=args.schedule, display_name=f"{args.display_name}-schedule",
                                     service_account=args.service_account or None)
      print(f"created schedule {schedule.resource_name} ({args.schedule})")
    else:
      job.submit(service_account=args.service_account or None)
      print(f"submitted {job.resource_name}: {job._dashboard_uri()}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
