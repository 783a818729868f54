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

log = logging.getLogger("pipelines.local")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m pipelines.local", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--output", help="where every artifact goes (default runs/<timestamp>)")
  p.add_argument("--model", help="released model name or checkpoint URI (default: the offline demo's "
                 "small random model)")
  p.add_argument("--source", default="", help="where the weights come from (kaggle|gcs|hf|URI), see "
                 "python -m components.download --help")
  p.add_argument("--tokenizer", default="")
  p.add_argument("--train-images", type=int, help="demo: synthetic training images (default local_demo.DEMO)")
  p.add_argument("--valid-images", type=int, help="demo: synthetic validation images")
  p.add_argument("--seed", type=int, help="seed of the split and of training; demo: also of the synthetic data "
                 "and the random model (default local_demo.DEMO)")
  p.add_argument("--dataset", help="labelled images: path or gs:// URI (default: a synthetic detection set)")
  p.add_argument("--format", default="coco", help="dataset format, see python -m components.convert --help")
  p.add_argument("--task", default="detect", choices=("detect", "caption", "vqa", "ocr", "segment"),
                 help="the task; with no --model, segment runs the offline segmentation demo")
  p.add_argument("--vqvae", default="", help="segment: the mask codec (VQ-VAE .npz URI) that download fetches "
                 "with the model and convert writes the <seg> tokens with (default: the released vae-oid.npz; the "
                 "demo fits its own)")
  p.add_argument("--classes", default="")
  p.add_argument("--config", help="finetune config name or .py path (default: notebook_attention_sgd for "
                 "real models, pipelines/local_demo.py for the demo)")
  p.add_argument("--trainable", help="preset or regexes (default: the config's)")
  p.add_argument("--steps", type=int, help="training steps (default: the config's; replaces its epochs)")
  p.add_argument("--epochs", type=float, help="training epochs (default: the config's; replaces its steps)")
  p.add_argument("--batch", type=int)
  p.add_argument("--lr", type=float)
  p.add_argument("--text-len", type=int)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="any other finetune config override, e.g. --set lora.rank=8 (repeatable)")
  p.add_argument("--eval-limit", type=int, default=0, help="evaluate on at most N examples (0 = all)")
  p.add_argument("--max-decode-len", type=int, default=0)
  p.add_argument("--export-format", default="npz", choices=("npz", "hf"))
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
  if args.vqvae and args.task != "segment":
    p.error(f"--vqvae is the mask codec of --task segment; this is --task {args.task}")
  return args


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
  check_finetune_settings(config, args.set, **finetune, seed=seed)
  if args.smoke:
    arguments = prepare_demo(os.path.join(output, "inputs"), SMOKE["train_images"], SMOKE["valid_images"],
                             args.seed, model=args.smoke_model)
    arguments.update(eval_limit=SMOKE["eval_limit"], max_decode_len=SMOKE["max_decode_len"])
  elif args.model:
    arguments = dict(model=args.model, model_source=args.source, tokenizer=args.tokenizer,
                     dataset_uri=args.dataset, dataset_format=args.format, task=args.task, vqvae=args.vqvae)
  else:
    arguments = prepare_demo(os.path.join(output, "inputs"), args.train_images, args.valid_images, args.seed,
                             task=args.task)
    if args.dataset:  # the demo model on the user's data
      arguments.update(dataset_uri=args.dataset, dataset_format=args.format, task=args.task)
    if args.vqvae:
      arguments["vqvae"] = args.vqvae
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
class _StepTimes(logging.Filter):
  """Wall seconds of each task, from the KFP local runner's own log records ("Executing task 'x'", "Task
  'x' finished ..."); a filter on the root logger, which keeps it while the runner swaps the handlers."""

  def __init__(self):
    super().__init__()
    self.seconds, self._started = {}, {}

  def filter(self, record):
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(record.msg))
    if m := re.match(r"Executing task '?([\w-]+)'?", text):
      self._started[m[1]] = record.created
    elif (m := re.match(r"Task '?([\w-]+)'? finished", text)) and m[1] in self._started:
      self.seconds[m[1]] = round(record.created - self._started.pop(m[1]), 1)
    return True


def run(arguments: dict, output: str) -> dict:
  """Runs the local target's DAG in-process and writes OUTPUT/summary.json; returns the summary."""
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
  logging.getLogger().addFilter(step_times)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings("ignore", message=".*non-Python base image.*")  # images are for cloud targets
      run_task = build_pipeline(get_target("local"))(**arguments)
  finally:
    logging.getLogger().removeFilter(step_times)
  elapsed = time.monotonic() - start
  with open(run_task.output.path) as f:
    decision = json.load(f)
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
  }
  write_json_atomic(os.path.join(output, "summary.json"), summary)
  return summary


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
  args = parse_args(argv)
  output = os.path.abspath(args.output or os.path.join(
      "runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S")))
  os.makedirs(output, exist_ok=True)
  start = time.monotonic()
  from components.finetune.config import ConfigError
  try:
    arguments = pipeline_arguments(args, output)
  except ConfigError as e:
    print(f"python -m pipelines.local: finetune config: {e}", file=sys.stderr)
    return 2
  summary = run(arguments, output)
  metric = summary["gate"]["metric"]
  print(f"\nbase  {metric}: {summary['gate']['base']:.4f}")
  print(f"tuned {metric}: {summary['gate']['tuned']:.4f}")
  print(f"gate: {'PASSED' if summary['gate']['passed'] else 'NOT PASSED'}: {summary['gate']['reason']}")
  print(f"report: {summary['report']}")
  print(f"exported model: {summary['exported_model'] or '(none: the gate did not pass)'}")
  if summary["step_seconds"]:
    print("seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["step_seconds"].items()))
  print(f"summary: {os.path.join(output, 'summary.json')} (total {time.monotonic() - start:.0f}s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
