"""Helpers the DAG's component bodies use inside their container (the gate, promote, evaluate and export
components). Plain Python, no kfp: KFP's executor imports them next to its reduced `kfp.dsl`."""
from __future__ import annotations

import json
import os


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
  """Exported models live at EXPORT_URI/RUN_ID; with no export URI, at `fallback` (the step's own artifact)."""
  if not export_uri:
    return fallback
  if not run_id:
    raise ValueError(f"export_uri {export_uri!r} needs a run_id: exports land in EXPORT_URI/RUN_ID (the pipeline "
                     "passes its run name)")
  return f"{export_uri.rstrip('/')}/{run_id}"


def report_path(evaluation_dir: str) -> str:
  return os.path.join(evaluation_dir, "report.html")


SPLIT_INFO = "split.json"


def split_info(dataset_dir: str, split: str) -> dict:
  """Which split an evaluation scored: name, membership fingerprint and size, from convert's report.json
  (fingerprint None for a dataset converted before reports had them)."""
  with open(os.path.join(dataset_dir, "report.json")) as f:
    report = json.load(f)
  return {"name": split, "fingerprint": report.get("split_fingerprints", {}).get(split),
          "examples": report["counts"].get(split), "dataset": report.get("input")}


def write_split_info(evaluation_dir: str, info: dict) -> None:
  os.makedirs(evaluation_dir, exist_ok=True)
  with open(os.path.join(evaluation_dir, SPLIT_INFO), "w") as f:
    json.dump(info, f, indent=2)


def read_split_info(evaluation_dir: str) -> dict | None:
  path = os.path.join(evaluation_dir, SPLIT_INFO)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
