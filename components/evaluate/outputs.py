"""Scoring predictions and writing an evaluation directory: predictions.jsonl, metrics.json, report.html.

Shared by `evaluate run` (after decoding) and `evaluate score --output`. A baseline is another
evaluation directory; its `predictions.jsonl` is scored again against *these* references, so that base
and tuned numbers always describe the same examples.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

from components.evaluate import jsonl, report, scoring

log = logging.getLogger(__name__)
PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
REPORT = "report.html"


def score_baseline(task: str, baseline_dir: str, references: Sequence[dict]) -> tuple[dict, list[dict]]:
  path = os.path.join(baseline_dir, PREDICTIONS)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"baseline {baseline_dir} has no {PREDICTIONS}; give the output directory of an "
                            "earlier `evaluate run` (for example of the base model)")
  rows = jsonl.read_jsonl(path, required=("image", "prefix", "prediction"))
  return scoring.score(task, rows, references, predictions_name=path)


def write_evaluation(out_dir: str, task: str, predictions: Sequence[dict], references: Sequence[dict], *,
                     image_root: str | None, baseline_dir: str | None = None, predictions_name: str = PREDICTIONS,
                     title: str | None = None, extra: dict | None = None) -> dict:
  """Scores, writes predictions.jsonl, metrics.json (plus `extra`) and report.html into `out_dir`; returns
  the metrics."""
  jsonl.write_jsonl(os.path.join(out_dir, PREDICTIONS), predictions)
  metrics, records = scoring.score(task, predictions, references, predictions_name=predictions_name)
  metrics.update(extra or {})  # e.g. the examples the run had to leave out
  base_metrics = base_records = None
  if baseline_dir:
    base_metrics, base_records = score_baseline(task, baseline_dir, references)
    metrics_out = {**metrics, "baseline": {k: v for k, v in base_metrics.items() if k != "malformed"}}
  else:
    metrics_out = metrics
  jsonl.write_json(os.path.join(out_dir, METRICS), metrics_out)
  page = report.render_report(metrics, records, image_root=image_root, base_metrics=base_metrics,
                              base_records=base_records, title=title or f"{task} evaluation")
  jsonl.write_text(os.path.join(out_dir, REPORT), page)
  log.info("wrote %s, %s and %s in %s", PREDICTIONS, METRICS, REPORT, out_dir)
  return metrics_out


def summary_line(metrics: dict) -> str:
  """The headline numbers, for the log."""
  parts = [f"{k}={v:.4f}" for k, v in metrics.items()
           if isinstance(v, float) and not k.startswith("num_")]
  return ", ".join(parts)
