"""Scoring predictions and writing an evaluation directory: predictions.jsonl, metrics.json, report.html,
and for detection coco_results.json (the boxes as COCO results, for any COCO tool). For segmentation each
predictions.jsonl row also records `objects`: what its text parsed to (label, box, codes, score, rle).

Shared by `evaluate run` (after decoding) and `evaluate score --output`. A baseline is another
evaluation directory; its `predictions.jsonl` is scored again against *these* references, so that base
and tuned numbers always describe the same examples.
"""
from __future__ import annotations

import datetime
import logging
import os
from typing import Sequence

from components.evaluate import coco_results, jsonl, report, scoring

log = logging.getLogger(__name__)
PREDICTIONS = "predictions.jsonl"
METRICS = "metrics.json"
REPORT = "report.html"
COCO_RESULTS = coco_results.RESULTS


def score_baseline(task: str, baseline_dir: str, references: Sequence[dict], **score_args
                   ) -> tuple[dict, list[dict]]:
  """The baseline's predictions scored against `references`; `score_args` go to `scoring.score`."""
  path = os.path.join(baseline_dir, PREDICTIONS)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"baseline {baseline_dir} has no {PREDICTIONS}; give the output directory of an "
                            "earlier `evaluate run` (for example of the base model)")
  rows = jsonl.read_jsonl(path, required=("image", "prefix", "prediction"))
  return scoring.score(task, rows, references, predictions_name=path, **score_args)


def with_parsed_objects(predictions: Sequence[dict], records: Sequence[dict]) -> list[dict]:
  """Segmentation: each scored prediction row with `objects`, what its text parsed to (masks.py's
  `pred_objects`: label, box, codes, score, rle), matched by the row's `_line`."""
  parsed = {r["line"]: r["pred_objects"] for r in records if r.get("line") is not None}
  return [{**row, "objects": parsed[row["_line"]]} if row.get("_line") in parsed else row for row in predictions]


def now() -> str:
  """The report's date: UTC, to the second."""
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def write_evaluation(out_dir: str, task: str, predictions: Sequence[dict], references: Sequence[dict], *,
                     image_root: str | None, baseline_dir: str | None = None, predictions_name: str = PREDICTIONS,
                     title: str | None = None, extra: dict | None = None, header: dict | None = None,
                     dataset_ids: coco_results.DatasetIds | None = None, vqvae=None,
                     references_name: str = "references") -> dict:
  """Scores, writes predictions.jsonl, metrics.json (plus `extra`), coco_results.json (detection) and
  report.html into `out_dir`; returns the metrics. `header`: the report header's fields (report.HEADER_FIELDS;
  the date defaults to now); `dataset_ids`: the image and category ids of COCO results (default: from the
  references and the report.json beside `image_root`); `vqvae`: the mask codec (segmentation)."""
  path = os.path.join(out_dir, PREDICTIONS)
  jsonl.write_jsonl(path, predictions)  # first: a scoring error must not cost the decoding
  score_args = {"vqvae": vqvae, "image_root": image_root, "references_name": references_name}
  metrics, records = scoring.score(task, predictions, references, predictions_name=predictions_name, **score_args)
  if task == "segment":
    jsonl.write_jsonl(path, with_parsed_objects(predictions, records))
  metrics.update(extra or {})  # e.g. the examples the run had to leave out
  base_metrics = base_records = None
  if baseline_dir:
    base_metrics, base_records = score_baseline(task, baseline_dir, references, **score_args)
    metrics_out = {**metrics, "baseline": {k: v for k, v in base_metrics.items() if k != "malformed"}}
  else:
    metrics_out = metrics
  jsonl.write_json(os.path.join(out_dir, METRICS), metrics_out)
  written = [PREDICTIONS, METRICS]
  if task == "detect":
    try:
      ids = dataset_ids or coco_results.DatasetIds(references, image_root)
      coco_results.write(os.path.join(out_dir, COCO_RESULTS), records, ids)
      written.append(COCO_RESULTS)
    except ValueError as e:  # e.g. references without image sizes: the rest of the evaluation stands
      log.warning("no %s: %s", COCO_RESULTS, e)
  page = report.render_report(metrics, records, image_root=image_root, base_metrics=base_metrics,
                              base_records=base_records, title=title or f"{task} evaluation",
                              header={"date": now(), **(header or {})})
  jsonl.write_text(os.path.join(out_dir, REPORT), page)
  log.info("wrote %s and %s in %s", ", ".join(written), REPORT, out_dir)
  return metrics_out


def summary_line(metrics: dict) -> str:
  """The headline numbers, for the log."""
  parts = [f"{k}={v:.4f}" for k, v in metrics.items()
           if isinstance(v, float) and not k.startswith("num_")]
  return ", ".join(parts)
