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
