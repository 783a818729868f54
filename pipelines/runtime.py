"""Helpers the pipeline's own component bodies (gate and promote) use inside their container. Plain Python,
no kfp: KFP's executor imports them next to its reduced `kfp.dsl`. (The steps' bodies use their own task
modules: components never import this package.)"""
from __future__ import annotations

import json
import os


def read_metrics(evaluation_dir: str) -> dict:
  path = os.path.join(evaluation_dir, "metrics.json")
  with open(path) as f:
    return json.load(f)


def champion_location(champion_uri: str, export_uri: str) -> str:
  """The champion record: given explicitly, else `champion.json` next to the exported models."""
  if champion_uri:
    return champion_uri
  if export_uri:
    return export_uri.rstrip("/") + "/champion.json"
  return ""


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
