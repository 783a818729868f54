"""Helpers the pipeline's own components (`pipelines/steps.py`) use inside their container."""
from __future__ import annotations

import json
import logging
import os
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


