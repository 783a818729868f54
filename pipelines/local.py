"""Run the whole pipeline on this machine with the KFP local runner.

  python -m pipelines.local                       # offline demo: synthetic shapes, small random model, CPU
  python -m pipelines.local --model paligemma2-3b-pt-224 --dataset ./my_coco --format coco --task detect
  python -m pipelines.local --task segment        # offline segmentation demo: synthetic instance masks, fitted codec
  python -m pipelines.local --smoke               # every step once at real size (3B, random weights), timed

Every artifact lands in `--output` (default `runs/<timestamp>`), with `summary.json`: the base and tuned
metrics, the gate's decision and reason, and the paths of the report and of the exported model.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import sys
import time
import warnings

from components.common import cli
from components.convert.readers import FORMATS
from pipelines import checks, failures

log = logging.getLogger("pipelines.local")
PROG = "python -m pipelines.local"
# The flags that set the finetune step's named parameters (components/finetune/task.py SETTINGS), so that a
# finetune error names what the user typed (`--batch 64`), before the run and from inside the step.
FINETUNE_FLAGS = {"trainable": "--trainable", "total_steps": "--steps", "epochs": "--epochs", "batch_size": "--batch",
                  "lr": "--lr", "text_len": "--text-len", "seed": "--seed", "overrides": "--set"}


def parse_args(argv=None) -> argparse.Namespace:
  p = cli.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--output", help="where every artifact goes (default runs/<timestamp>)")
  p.add_argument("--model", help="released model name or checkpoint URI (default: the offline demo's "
                 "small random model)")
  p.add_argument("--init", default="pretrained", choices=("pretrained", "random"),
                 help="random: start --model (a configs name, e.g. small-v2) from seeded random weights and a small "
                 "tokenizer instead of downloading a checkpoint; the run says so, and model.json and summary.json "
                 "record it")
  p.add_argument("--source", default="", help="where the weights come from (kaggle|gcs|hf|URI), see "
                 "python -m components.download --help")
  p.add_argument("--tokenizer", default="", help="tokenizer.model (default: the one the model comes with)")
  p.add_argument("--train-images", type=checks.positive_int, help="demo: synthetic training images (default "
                 "local_demo.DEMO)")
  p.add_argument("--valid-images", type=checks.positive_int, help="demo: synthetic validation images")
  p.add_argument("--seed", type=int, help="seed of the split and of training; demo: also of the synthetic data "
                 "and the random model (default local_demo.DEMO)")
  p.add_argument("--dataset", help="labelled images: path or gs:// URI (default: a synthetic detection set)")
  p.add_argument("--format", default="coco", choices=FORMATS, help="dataset format (components.convert's "
                 "--format; default coco)")
  p.add_argument("--task", default="detect", choices=("detect", "caption", "vqa", "ocr", "segment"),
                 help="what the model learns to answer (default detect); with no --model and no --dataset, "
                 "segment runs the offline segmentation demo")
  p.add_argument("--vqvae", default="", help="segment: the mask codec (VQ-VAE .npz URI) that download fetches "
                 "with the model and convert writes the <seg> tokens with (default: the released vae-oid.npz; the "
                 "demo fits its own)")
  p.add_argument("--classes", default="", help="detection/segmentation classes in prompt order, comma-separated "
                 "(default: the dataset's)")
  p.add_argument("--config", help="finetune config name or .py path (default: notebook_attention_sgd for "
                 "real models, pipelines/local_demo.py for the demo)")
  p.add_argument("--trainable", help="preset or regexes (default: the config's)")
  p.add_argument("--steps", type=checks.positive_int, help="training steps (default: the config's; replaces its "
                 "epochs)")
  p.add_argument("--epochs", type=checks.positive_float, help="training epochs (default: the config's; replaces "
                 "its steps)")
  p.add_argument("--batch", type=checks.positive_int, help="global batch size (default: the config's)")
  p.add_argument("--lr", type=checks.positive_float, help="peak learning rate (default: the config's)")
  p.add_argument("--text-len", type=checks.positive_int, help="tokens of prefix + suffix (default: the "
                 "config's)")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="any other finetune config override, e.g. --set lora.rank=8 (repeatable)")
  p.add_argument("--eval-limit", type=checks.non_negative_int, default=0, help="evaluate on at most N examples "
                 "(0 = all)")
  p.add_argument("--max-decode-len", type=checks.non_negative_int, default=0, help="tokens to generate when "
                 "evaluating (0 = by task)")
  p.add_argument("--export-format", default="npz", choices=("npz", "hf"), help="the exported model's format "
                 "(components.export --export-format)")
  p.add_argument("--champion", default="", help="champion record to beat (default OUTPUT/models/champion.json)")
  p.add_argument("--min-metric", type=float, default=0.0, help="the tuned model must reach this headline metric")
  p.add_argument("--min-improvement", type=float, default=0.0,
                 help="the tuned model must beat the champion (or base model) by more than this")
  p.add_argument("--rebaseline", action="store_true", help="compare with the base model and replace a champion "
                 "record of another task or metric if the tuned model passes")
  p.add_argument("--smoke", action="store_true", help="time every step once: --smoke-model with random weights, "
                 "a tiny synthetic dataset, the pipeline's default finetune config for a few steps; prints seconds "
                 "per step (summary.json: step_seconds)")
  p.add_argument("--smoke-model", default="paligemma2-3b-pt-224", help="the --smoke model (a configs name)")
  args = p.parse_args(argv)
  if args.model and not args.dataset:
    p.error("--model needs --dataset (and --format): the demo's synthetic data only fits the demo model")
  if problem := init_problem(args.model, args.init, args.source):
    p.error(problem)
  if args.vqvae and args.task != "segment":
    p.error(f"--vqvae is the mask codec of --task segment; this is --task {args.task}")
  try:  # what can be checked on this machine, before anything runs
    if args.format != "hf":  # hf: a hub dataset name
      checks.local_input("--dataset", args.dataset)
    checks.local_input("--model", args.model, names_allowed=True)
    checks.local_input("--source", args.source, names_allowed=True)
    checks.local_input("--tokenizer", args.tokenizer)
    checks.local_input("--config", args.config, names_allowed=True)
  except ValueError as e:
    p.error(str(e))
  return args


def init_problem(model: str | None, init: str, source: str) -> str | None:
  """Why --model/--init/--source do not go together, or None."""
  from components.paligemma import configs

  if init == "random":
    if not model:
      return "--init random needs --model (a configuration name, e.g. small-v2)"
    if source:
      return "--init random makes the weights: leave out --source"
    from components.paligemma._small_tokenizer import MIN_VOCAB_SIZE

    try:
      vocab = configs.model_config(model)["llm"]["vocab_size"]
    except (KeyError, ValueError):
      return (f"--init random needs a configuration name for --model, not {model!r} (one of "
              f"{', '.join(configs.SMALL_CONFIGS)} or a released name)")
    if vocab < MIN_VOCAB_SIZE:  # the tiny-* test configs: no room for the <loc>/<seg> pieces
      fits = [n for n, c in configs.SMALL_CONFIGS.items() if c["llm"]["vocab_size"] >= MIN_VOCAB_SIZE]
      return (f"--init random: {model}'s vocabulary ({vocab}) has no room for a tokenizer with PaliGemma's "
              f"<loc>/<seg> pieces (>= {MIN_VOCAB_SIZE}); use {' or '.join(fits)}")
  elif model in configs.SMALL_CONFIGS and not source:
    return (f"--model {model} is a configuration, not a released checkpoint: add --init random to start it from "
            "seeded random weights, or give its weights with --source URI")
  return None


def prepare_random_model(inputs: str, model: str, seed: int) -> dict:
  """--init random: writes `model` with seeded random weights and a small tokenizer (model.json records
  `init` and `seed`); returns the pipeline arguments that use them."""
  from pipelines import synthetic

  start = time.monotonic()
  checkpoint = synthetic.make_random_model(os.path.join(inputs, "model"), model, seed=seed)
  log.warning("--init random: %s starts from random weights (seed %d) and a small tokenizer, not a released "
              "checkpoint (%.0fs); expect a model that learns only what this dataset teaches", model, seed,
              time.monotonic() - start)
  return dict(model=model, model_source=checkpoint)


def _demo_settings(defaults: dict, train_images: int | None, valid_images: int | None, seed: int | None,
                   model: str | None) -> dict:
  """A demo config's DEMO with the command line's values (None: the config's)."""
  demo = dict(defaults)
  demo.update({k: v for k, v in (("train_images", train_images), ("valid_images", valid_images),
                                 ("model", model)) if v})
  if seed is not None:
    demo["seed"] = seed
  return demo


def prepare_demo(inputs: str, train_images: int | None = None, valid_images: int | None = None,
                 seed: int | None = None, model: str | None = None, task: str = "detect") -> dict:
  """Writes the synthetic dataset and the random model; returns the pipeline arguments that use them.
  `task` segment: the segmentation demo (`prepare_segment_demo`)."""
  from components import paligemma
  from pipelines import local_demo, synthetic

  if task == "segment":
    return prepare_segment_demo(inputs, train_images, valid_images, seed, model)
  demo = _demo_settings(local_demo.DEMO, train_images, valid_images, seed, model)
  size = paligemma.configs.image_size(paligemma.configs.model_config(demo["model"]))
  start = time.monotonic()
  dataset = synthetic.make_detection_dataset(os.path.join(inputs, "dataset"), train=demo["train_images"],
                                             valid=demo["valid_images"], image_size=size, seed=demo["seed"],
                                             grid=demo["grid"])
  checkpoint = synthetic.make_random_model(os.path.join(inputs, "model"), demo["model"], seed=demo["seed"])
  log.info("demo inputs ready in %.0fs: %d+%d synthetic images, random %s", time.monotonic() - start,
           demo["train_images"], demo["valid_images"], demo["model"])
  return dict(model=demo["model"], model_source=checkpoint, dataset_uri=dataset, dataset_format="coco",
              task="detect", finetune_config=os.path.abspath(local_demo.__file__), seed=demo["seed"],
              max_decode_len=demo["max_decode_len"], eval_limit=demo["eval_limit"])


def prepare_segment_demo(inputs: str, train_images: int | None = None, valid_images: int | None = None,
                         seed: int | None = None, model: str | None = None) -> dict:
  """The segmentation demo's inputs (pipelines/local_segment_demo.py): synthetic shapes with instance masks,
  the random model, and a mask codec fitted on synthetic masks in the model directory (model.json `vqvae`,
  as download --vqvae leaves it). The codec's path is the pipeline's `vqvae`: download fetches it with the
  model, convert writes the <seg> tokens with it."""
  from components import paligemma
  from pipelines import local_segment_demo, synthetic

  demo = _demo_settings(local_segment_demo.DEMO, train_images, valid_images, seed, model)
  size = paligemma.configs.image_size(paligemma.configs.model_config(demo["model"]))
  start = time.monotonic()
  dataset = synthetic.make_segmentation_dataset(os.path.join(inputs, "dataset"), train=demo["train_images"],
                                                valid=demo["valid_images"], image_size=size, seed=demo["seed"],
                                                max_objects=demo["max_objects"], grid=demo["grid"])
  model_dir = os.path.join(inputs, "model")
  checkpoint = synthetic.make_random_model(model_dir, demo["model"], seed=demo["seed"])
  codec = synthetic.make_demo_codec(model_dir, masks=demo["codec_masks"], steps=demo["codec_steps"],
                                    seed=demo["seed"], image_size=size)
  log.info("segmentation demo inputs ready in %.0fs: %d+%d synthetic images, random %s, mask codec fitted on "
           "%d masks", time.monotonic() - start, demo["train_images"], demo["valid_images"], demo["model"],
           demo["codec_masks"])
  return dict(model=demo["model"], model_source=checkpoint, vqvae=codec, dataset_uri=dataset,
              dataset_format="coco", task="segment", finetune_config=os.path.abspath(local_segment_demo.__file__),
              seed=demo["seed"], max_decode_len=demo["max_decode_len"], eval_limit=demo["eval_limit"])


# --smoke: the sizes of a timing run (every step once, not learning anything).
SMOKE = dict(train_images=16, valid_images=8, total_steps=4, batch_size=8, eval_limit=8, max_decode_len=8)


def pipeline_arguments(args: argparse.Namespace, output: str) -> dict:
  """The pipeline's arguments; the finetune settings are checked (config.ConfigError) before the demo's inputs
  are written."""
  from pipelines import local_demo, local_segment_demo

  demo_config = local_segment_demo if args.task == "segment" else local_demo
  if args.smoke:
    args.steps, args.batch = args.steps or SMOKE["total_steps"], args.batch or SMOKE["batch_size"]
  finetune = dict(trainable=args.trainable, total_steps=args.steps, epochs=args.epochs, batch_size=args.batch,
                  lr=args.lr, text_len=args.text_len)
  finetune = {k: v for k, v in finetune.items() if v is not None}  # unset: the finetune config's value
  config = args.config or ("notebook_attention_sgd" if args.model or args.smoke
                           else os.path.abspath(demo_config.__file__))
  seed = demo_config.DEMO["seed"] if args.seed is None else args.seed  # the split's and the trainer's
  check_finetune_settings(config, args.set, **finetune, seed=seed, flag_names=FINETUNE_FLAGS)
  if args.smoke:
    arguments = prepare_demo(os.path.join(output, "inputs"), SMOKE["train_images"], SMOKE["valid_images"],
                             args.seed, model=args.smoke_model)
    arguments.update(eval_limit=SMOKE["eval_limit"], max_decode_len=SMOKE["max_decode_len"])
  elif args.model or args.dataset:  # own data: lengths from the data (text_len 0, max_decode_len 0)
    model = args.model or local_demo.DEMO["model"]  # no --model: the demo's model, random, on the user's data
    if args.init == "random" or not args.model:
      arguments = prepare_random_model(os.path.join(output, "inputs"), model, seed)
    else:
      arguments = dict(model=model, model_source=args.source, tokenizer=args.tokenizer)
    arguments.update(dataset_uri=args.dataset, dataset_format=args.format, task=args.task, vqvae=args.vqvae)
    if "text_len" not in finetune and not any(o.split("=", 1)[0].strip() == "text_len" for o in args.set):
      finetune["text_len"] = 0  # the finetune step sizes it from the training examples
  else:
    arguments = prepare_demo(os.path.join(output, "inputs"), args.train_images, args.valid_images, args.seed,
                             task=args.task)
  arguments.update(finetune, finetune_config=config, seed=seed, classes=args.classes, finetune_overrides=args.set,
                   export_uri=os.path.join(output, "models"), export_format=args.export_format,
                   champion_uri=args.champion, min_metric=args.min_metric,
                   min_improvement=args.min_improvement, rebaseline=args.rebaseline)
  if args.eval_limit:
    arguments["eval_limit"] = args.eval_limit
  if args.max_decode_len:
    arguments["max_decode_len"] = args.max_decode_len
  return arguments


def check_finetune_settings(config: str, overrides=(), **settings) -> None:
  """Builds the finetune config the run would train with (no training): a bad key or value fails now, in one
  line (components.finetune.config.ConfigError), not minutes later inside the finetune step."""
  from components.finetune import task

  task.resolve_config(config, overrides=overrides, **settings)


MAX_LISTED_ROWS = 5  # rejected/repaired rows of convert listed in the summary (all are in its report.json)


def convert_summary(run_dir: str) -> dict | None:
  """Convert's report of this run (the KFP local runner's layout: RUN/convert/dataset/report.json), in brief:
  counts, rejected and repaired rows (the first MAX_LISTED_ROWS of each, with their reasons) and warnings."""
  path = os.path.join(run_dir, "convert", "dataset", "report.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    report = json.load(f)
  brief = {"report": path, "counts": report["counts"], "warnings": report.get("warnings", [])}
  for kind in ("rejected", "repaired"):
    brief[kind] = len(report.get(kind, []))
    brief[f"first_{kind}"] = report.get(kind, [])[:MAX_LISTED_ROWS]
  return brief


def _row_text(row: dict) -> str:
  where = ", ".join(str(row[k]) for k in ("file", "row", "image") if row.get(k) not in (None, ""))
  return f"{where}: {row.get('reason', '')}"


class _StepWarnings:
  """The WARNING lines of the data and training steps' output (kfp_local_fix.LINE_HOOK), by the task that
  printed them (`_StepTimes.current`); at most MAX_PER_STEP each. (The evaluations' warnings are about the
  models' answers: their reports and metrics.json hold them.)"""
  STEPS = ("download", "convert", "finetune")
  MAX_PER_STEP = 10

  def __init__(self, step_times):
    self.step_times, self.warnings = step_times, []

  def __call__(self, line: str) -> None:
    if line.startswith("WARNING: "):
      step = self.step_times.current or "?"
      if step in self.STEPS and sum(w["step"] == step for w in self.warnings) < self.MAX_PER_STEP:
        self.warnings.append({"step": step, "message": line.removeprefix("WARNING: ").rstrip()})


class _StepTimes(logging.Filter):
  """Wall seconds of each task, from the KFP local runner's own log records ("Executing task 'x'", "Task
  'x' finished ..."); a filter on the root logger, which keeps it while the runner swaps the handlers."""

  def __init__(self):
    super().__init__()
    self.seconds, self._started, self.current = {}, {}, None

  def filter(self, record):
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(record.msg))
    if m := re.match(r"Executing task '?([\w-]+)'?", text):
      self._started[m[1]] = record.created
      self.current = m[1]
    elif (m := re.match(r"Task '?([\w-]+)'? finished", text)) and m[1] in self._started:
      self.seconds[m[1]] = round(record.created - self._started.pop(m[1]), 1)
    return True


PIPELINE_LOG = "pipeline.log"  # in OUTPUT: what the run printed and the runner's records (failures.StepLog)


def model_init(arguments: dict) -> dict:
  """How the base model's weights were made: model.json's `init` beside a checkpoint pipelines.local wrote
  ({"init": "random", "seed"}), else {"init": "pretrained"}."""
  source = arguments.get("model_source") or ""
  path = os.path.join(os.path.dirname(source), "model.json")
  if source and os.path.exists(path):
    with open(path) as f:
      written = json.load(f)
    if "init" in written:
      return {"init": written["init"], "seed": written.get("seed"), "model": arguments["model"]}
  return {"init": "pretrained", "model": arguments.get("model")}


def in_flag_names(error: BaseException) -> BaseException:
  """A finetune step's message names its parameters (`parameter batch_size: ...`); the user set them with
  this CLI's flags (`--batch`)."""
  if not isinstance(error, failures.StepFailed):
    return error
  message = re.sub(r"\bparameter (\w+)", lambda m: FINETUNE_FLAGS.get(m[1], m[0]), error.message)
  return failures.StepFailed(error.step, message, error.log)


def run(arguments: dict, output: str) -> dict:
  """Runs the local target's DAG in-process and writes OUTPUT/summary.json; returns the summary. A failed step
  raises failures.StepFailed (its name and one-line message; everything in OUTPUT/pipeline.log)."""
  import kfp.local

  from components.common.atomic import write_json_atomic
  from pipelines import champion, kfp_local_fix
  from pipelines.dag import build_pipeline
  from pipelines.targets import get_target

  # The local runner runs each step in this interpreter (no containers, no per-step venv).
  kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False),
                 pipeline_root=os.path.join(output, "artifacts"), raise_on_error=True)
  kfp_local_fix.install()  # dsl.If (the gate) evaluates like on Vertex AI / KFP
  start = time.monotonic()
  step_times = _StepTimes()
  step_warnings = _StepWarnings(step_times)
  kfp_local_fix.LINE_HOOK = step_warnings
  logging.getLogger().addFilter(step_times)
  try:
    with warnings.catch_warnings(), kfp_local_fix.quiet_orchestrator_logs(), failures.StepLog(
        os.path.join(output, PIPELINE_LOG)) as steps:
      warnings.filterwarnings("ignore", message=".*non-Python base image.*")  # images are for cloud targets
      try:
        run_task = build_pipeline(get_target("local"))(**arguments)
      except RuntimeError as e:  # the runner's "Inner task failed": say which step, and its own message
        raise in_flag_names(steps.failure(e)) from None
  finally:
    logging.getLogger().removeFilter(step_times)
    kfp_local_fix.LINE_HOOK = None
  elapsed = time.monotonic() - start
  with open(run_task.output.path) as f:
    decision = json.load(f)
  run_dir = os.path.dirname(os.path.dirname(run_task.output.path))  # RUN/gate/decision
  record = champion.read(decision["champion_uri"]) if decision["passed"] else None
  summary = {
      "base": decision["base_metrics"], "tuned": decision["tuned_metrics"],
      "gate": {k: decision[k] for k in ("passed", "metric", "tuned", "base", "reference_name", "reference",
                                        "champion_rescored", "champion_stored", "split", "reason")},
      "report": decision["tuned_report"],
      "exported_model": record["model_uri"] if record else None,
      "champion_record": decision["champion_uri"] if record else None,
      "pipeline_seconds": round(elapsed, 1),
      "step_seconds": step_times.seconds,
      "arguments": {k: v for k, v in arguments.items()},
      "convert": convert_summary(run_dir),
      "warnings": step_warnings.warnings,
      "model_init": model_init(arguments),
      "log": os.path.join(output, PIPELINE_LOG),
  }
  write_json_atomic(os.path.join(output, "summary.json"), summary)
  return summary


def main(argv=None) -> int:
  from pipelines import kfp_local_fix

  os.environ.update(kfp_local_fix.step_environment())  # before JAX loads: no TPU probe on a machine without one
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
  args = parse_args(argv)
  output = os.path.abspath(args.output or os.path.join(
      "runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S")))
  os.makedirs(output, exist_ok=True)
  start = time.monotonic()
  from components.finetune.config import ConfigError
  try:
    arguments = pipeline_arguments(args, output)
  except ConfigError as e:  # names the flag: `--set lrr=1: unknown config key 'lrr' ...`
    return cli.report(PROG, str(e))
  except FileNotFoundError as e:  # a --config name that is no shipped config
    return cli.report(PROG, f"--config {args.config}: {e}")
  try:
    summary = run(arguments, output)
  except failures.StepFailed as e:
    print(f"{PROG}: {e}", file=sys.stderr)
    return 1
  metric = summary["gate"]["metric"]
  print(f"\nbase  {metric}: {summary['gate']['base']:.4f}")
  print(f"tuned {metric}: {summary['gate']['tuned']:.4f}")
  print(f"gate: {'PASSED' if summary['gate']['passed'] else 'NOT PASSED'}: {summary['gate']['reason']}")
  print(f"report: {summary['report']}")
  print(f"exported model: {summary['exported_model'] or '(none: the gate did not pass)'}")
  if brief := summary["convert"]:
    print(f"dataset: {', '.join(f'{n} {k}' for k, n in brief['counts'].items())}; {brief['rejected']} rejected, "
          f"{brief['repaired']} repaired rows (report: {brief['report']})")
    for kind in ("rejected", "repaired"):
      for row in brief[f"first_{kind}"]:
        print(f"  {kind}: {_row_text(row)}")
      if brief[kind] > len(brief[f"first_{kind}"]):
        print(f"  ... and {brief[kind] - len(brief[f'first_{kind}'])} more {kind} rows in the report")
  if summary["model_init"]["init"] == "random":
    print(f"base model: {summary['model_init']['model']} from random weights (seed {summary['model_init']['seed']})")
  for w in summary["warnings"]:
    print(f"WARNING [{w['step']}]: {w['message']}")
  if summary["step_seconds"]:
    print("seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["step_seconds"].items()))
  print(f"log: {summary['log']}")
  print(f"summary: {os.path.join(output, 'summary.json')} (total {time.monotonic() - start:.0f}s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
