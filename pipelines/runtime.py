"""What the pipeline's components do inside their container: run a step's CLI, find checkpoints, log metrics.

The KFP components in `pipelines/steps.py` are thin: they build a step's command line and call `run_step`,
so a step behaves the same in the pipeline as from a terminal (`python -m components.<step> ...`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time

log = logging.getLogger("pipelines")


def run_step(step: str, args: list[str]) -> None:
  """Runs `python -m components.<step> ARGS` with this interpreter; output streams to the task log."""
  command = [sys.executable, "-m", f"components.{step}", *[str(a) for a in args]]
  print(f"[pipelines] running: {' '.join(command)}", flush=True)
  start = time.monotonic()
  # The environment passes through: multi-host steps read Vertex AI's CLUSTER_SPEC / TPU_* themselves.
  result = subprocess.run(command)
  if result.returncode != 0:
    raise RuntimeError(f"step {step} failed with exit status {result.returncode} after "
                       f"{time.monotonic() - start:.0f}s; its log is above")
  print(f"[pipelines] {step} finished in {time.monotonic() - start:.0f}s", flush=True)


def evaluate(model, dataset, *, task, split, sampler, max_decode_len, limit, evaluation, metrics, report,
             baseline=None) -> None:
  """The evaluate components' body: run the step, then publish its numbers and report as KFP artifacts."""
  args = ["run", "--checkpoint", checkpoint_of(model.path), "--data", dataset.path, "--split", split,
          "--task", task, "--output", evaluation.path]
  if sampler:
    args += ["--sampler", sampler]
  if max_decode_len:
    args += ["--max-decode-len", max_decode_len]
  if limit:
    args += ["--limit", limit]
  if baseline is not None:
    args += ["--baseline", baseline.path]
  run_step("evaluate", args)
  values = scalar_metrics(read_metrics(evaluation.path))
  for name, value in values.items():
    metrics.log_metric(name, value)
  evaluation.metadata.update(values)
  shutil.copyfile(report_path(evaluation.path), report.path)


def checkpoint_of(model_dir: str) -> str:
  """The checkpoint to hand to evaluate/export: a model directory's `.npz`, or a finetune workdir itself."""
  model_json = os.path.join(model_dir, "model.json")
  if os.path.exists(os.path.join(model_dir, "config.json")) or not os.path.exists(model_json):
    return model_dir  # a finetune workdir (ARCHITECTURE.md): load_trained_params takes the directory
  with open(model_json) as f:
    checkpoint = json.load(f).get("checkpoint")
  if not checkpoint:
    raise ValueError(f"{model_json} has no \"checkpoint\" key; the model directory was not written by "
                     "components.download")
  return os.path.join(model_dir, checkpoint)


def read_metrics(evaluation_dir: str) -> dict:
  path = os.path.join(evaluation_dir, "metrics.json")
  with open(path) as f:
    return json.load(f)


def scalar_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
  """The numbers of a (possibly nested) metrics dict, flattened with '/' so KFP `Metrics` can show them."""
  flat = {}
  for key, value in metrics.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(scalar_metrics(value, prefix=f"{name}/"))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      flat[name] = float(value)
  return flat


def champion_location(champion_uri: str, export_uri: str) -> str:
  """The champion record: given explicitly, else `champion.json` next to the exported models."""
  if champion_uri:
    return champion_uri
  if export_uri:
    return export_uri.rstrip("/") + "/champion.json"
  return ""


def export_location(export_uri: str, run_id: str, fallback: str) -> str:
  """Exported models live at EXPORT_URI/RUN_ID; with no export URI, in the pipeline's own artifact."""
  return f"{export_uri.rstrip('/')}/{run_id}" if export_uri else fallback


def finetune_config_path(config: str) -> str:
  """A shipped config's name (`notebook_attention_sgd`) or a path to a config file."""
  if config.endswith(".py"):
    return config
  import components

  path = os.path.join(os.path.dirname(components.__file__), "finetune", "configs", f"{config}.py")
  if not os.path.exists(path):
    shipped = sorted(n.removesuffix(".py") for n in os.listdir(os.path.dirname(path)) if n.endswith(".py"))
    raise FileNotFoundError(f"no finetune config named {config!r}; shipped configs: {shipped}, or give a "
                            "path ending in .py")
  return path


def last_train_metrics(workdir: str) -> dict:
  """The latest value of every metric in WORKDIR/metrics.jsonl (train loss, validation loss, ...)."""
  latest = {}
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        if line.strip():
          latest.update(json.loads(line))
  return latest


def report_path(evaluation_dir: str) -> str:
  return os.path.join(evaluation_dir, "report.html")


def write_json_atomic(path: str, value) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)
