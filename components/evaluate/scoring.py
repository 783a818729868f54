"""Matching predictions to references and scoring them by task: the core of `evaluate score`.

References are rows `image`, `prefix`, `suffix` (a dataset's jsonl); several rows with the same
(image, prefix) are several reference answers (several captions; VQA's human answers; for detection and
segmentation, their objects together); a row may also carry an `answers` list, and for segmentation
`masks` (its objects' full-resolution masks as COCO RLE, see masks.py) and `height`/`width`.
Predictions are rows `image`, `prefix`, `prediction`, optionally `tokens` (each generated token's text)
and `token_logprobs`; for detection, instead of loc text, `boxes` (what `coco_results.read` makes of
another detector's output).
Images are matched by their stable key (`keys.py`: `source_image`, then `image`, then the end of the path).
A reference without a prediction is scored as an empty answer, a prediction without a reference is
left out; both are counted and logged.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Sequence

from components.evaluate import boxes as boxes_lib
from components.evaluate import detection, jsonl, keys, text, vqa

log = logging.getLogger(__name__)
TASKS = ("detect", "caption", "vqa", "ocr", "segment")
# Unreadable detection segments: logged (a random base model writes dozens), and kept in metrics.json.
MAX_LOGGED, MAX_LISTED = 5, 500


def match(predictions: Sequence[dict], references: Sequence[dict], *, predictions_name: str = "predictions",
          ) -> tuple[list[dict], dict]:
  """Examples (one per reference key, in reference order) and the counts of what did not match."""
  refs: dict[tuple[str, str], dict] = {}
  for row in references:
    key = (keys.image_key(row), keys.prefix_key(str(row["prefix"])))
    ref = refs.setdefault(key, {"image": str(row["image"]), "key": key[0], "prefix": str(row["prefix"]),
                                "references": [], "objects": [], "masks": [], "size": None,
                                "reference_line": row.get("_line", "?")})
    answers = row.get("answers")
    ref["references"].extend(str(a) for a in (answers if isinstance(answers, list) else [row["suffix"]]))
    objects = exact_objects(row)
    ref["objects"] = None if objects is None or ref["objects"] is None else ref["objects"] + objects
    masks = row.get("masks")  # segmentation's full-resolution ground truth (masks.py)
    ref["masks"] = None if not isinstance(masks, list) or ref["masks"] is None else ref["masks"] + masks
    if ref["size"] is None and row.get("width") and row.get("height"):
      ref["size"] = (int(row["height"]), int(row["width"]))
  index = keys.ImageIndex(references)
  preds: dict[tuple[str, str], dict] = {}
  for row in predictions:
    image = index.resolve(row)
    key = (keys.image_key(row) if image is None else image, keys.prefix_key(str(row["prefix"])))
    if key in preds:
      raise ValueError(f"{predictions_name}, line {row.get('_line', '?')}: a second prediction for image "
                       f"{key[0]!r} with prefix {row['prefix']!r} (first on line {preds[key].get('_line', '?')}); "
                       "keep one prediction per (image, prefix)")
    preds[key] = row
  index.log_summary("predictions")
  _check_one_kind(preds.values(), predictions_name)
  missing = [k for k in refs if k not in preds]
  unmatched = [k for k in preds if k not in refs]
  for what, found in (("references without a prediction (scored as empty answers)", missing),
                      ("predictions without a reference (left out)", unmatched)):
    if found:
      log.warning("%d %s, e.g. image %r, prefix %r", len(found), what, *found[0])
  examples = []
  for key, ref in refs.items():
    pred = preds.get(key, {})
    examples.append({**ref, "prediction": str(pred.get("prediction", "")), "tokens": pred.get("tokens"),
                     "token_logprobs": pred.get("token_logprobs"), "line": pred.get("_line"),
                     "boxes": _pred_boxes(pred, predictions_name) if "boxes" in pred else None})
  return examples, {"missing_predictions": len(missing), "unmatched_predictions": len(unmatched)}


def exact_objects(row: dict) -> list[boxes_lib.Box] | None:
  """A reference row's `objects` (pixels of its `width` x `height` image) as unit-square boxes; None when
  the row lacks them (then only its loc text says where the objects are)."""
  objects, width, height = row.get("objects"), row.get("width"), row.get("height")
  if not isinstance(objects, list) or not width or not height:
    return None
  return [boxes_lib.Box(boxes_lib.normalise_label(o["label"]), o["box"][1] / height, o["box"][0] / width,
                        o["box"][3] / height, o["box"][2] / width, 0, 0) for o in objects]


def _check_one_kind(rows, predictions_name: str) -> None:
  kinds = {"boxes" in r for r in rows}
  if len(kinds) > 1:
    odd = next(r for r in rows if "boxes" not in r)
    raise ValueError(f"{predictions_name}, line {odd.get('_line', '?')}: some predictions give `boxes` and this one "
                     "does not; score one kind at a time (boxes, or PaliGemma's loc text)")


def _pred_boxes(row: dict, predictions_name: str) -> list[tuple[boxes_lib.Box, float]]:
  """A prediction's `boxes`: [{"label", "box": [x1, y1, x2, y2] in [0, 1] of the image, "score"}]."""
  where = f"{predictions_name}, line {row.get('_line', '?')}"
  if not isinstance(row["boxes"], list):
    raise ValueError(f"{where}: `boxes` must be a list of {{label, box, score}}")
  out = []
  for i, b in enumerate(row["boxes"]):
    try:
      x1, y1, x2, y2 = (float(v) for v in b["box"])
      score, label = float(b.get("score", 1.0)), boxes_lib.normalise_label(str(b["label"]))
    except (KeyError, TypeError, ValueError):
      raise ValueError(f"{where}: box {i + 1} is not {{\"label\", \"box\": [x1, y1, x2, y2], \"score\"}}: {b!r}"
                       ) from None
    if not all(map(math.isfinite, (x1, y1, x2, y2, score))) or x2 < x1 or y2 < y1 or not label:
      raise ValueError(f"{where}: box {i + 1} {b!r} needs a label, finite numbers and x1 <= x2, y1 <= y2")
    out.append((boxes_lib.Box(label, y1, x1, y2, x2, 0, 0), score))
  return out


def _score_detect(examples: list[dict]) -> tuple[dict, list[dict]]:
  box_mode = any(ex["boxes"] is not None for ex in examples)
  if box_mode and any(ex["objects"] is None for ex in examples):
    log.warning("some references have no `objects` with `width`/`height` (convert writes them): boxes are compared "
                "with their loc text there, i.e. with corners rounded to 1/1023 of the image")
  for ex in examples:
    ex["reference"] = " ; ".join(r for r in ex["references"] if r.strip())
    ex["gt"] = ex.pop("objects") if box_mode else None  # boxes meet exact boxes; loc text meets loc text
    if box_mode and ex["boxes"] is None:
      ex["boxes"] = []  # no prediction for this image: nothing detected
  metrics, records = detection.score_detection(examples)
  metrics["malformed"] = _list_malformed(records)
  return metrics, records


def _list_malformed(records: list[dict]) -> list[dict]:
  """The unreadable segments of the predictions (records' `malformed`), logged; the first MAX_LISTED kept."""
  malformed = [{"line": r["line"], "image": r["image"], "prefix": r["prefix"], **m}
               for r in records for m in r["malformed"]]
  for m in malformed[:MAX_LOGGED]:
    log.warning("prediction line %s (image %r, prefix %r): segment %r is unreadable (%s); counted as a miss",
                m["line"], m["image"], m["prefix"], m["segment"], m["reason"])
  if len(malformed) > MAX_LOGGED:
    log.warning("... and %d more unreadable segments (the first %d are listed in metrics.json)",
                len(malformed) - MAX_LOGGED, MAX_LISTED)
  return malformed[:MAX_LISTED]


def _score_segment(examples: list[dict], vqvae, image_root: str | None, references_name: str
                   ) -> tuple[dict, list[dict]]:
  if vqvae is None:
    raise ValueError("scoring --task segment needs the mask codec (vqvae) to decode the <seg> tokens")
  from components.evaluate import masks  # the codec runs on jax: imported only when segmenting
  metrics, records = masks.score_segment(examples, vqvae, image_root, references_name)
  metrics["malformed"] = _list_malformed(records)
  return metrics, records


def _score_caption(examples: list[dict]) -> tuple[dict, list[dict]]:
  preds = [ex["prediction"] for ex in examples]
  refs = [ex["references"] for ex in examples]
  corpus_cider, per_example = text.cider(preds, refs)
  for ex, s in zip(examples, per_example):
    ex["score"] = s
  return {"cider": corpus_cider, "bleu4": text.bleu4(preds, refs), "num_examples": len(examples)}, examples


def _score_answers(examples: list[dict], task: str) -> tuple[dict, list[dict]]:
  totals = {"exact_match": 0.0, "anls": 0.0}
  if task == "vqa":
    totals["accuracy"] = 0.0
  edits = ref_chars = 0
  for ex in examples:
    p, refs = ex["prediction"], ex["references"]
    scores = {"exact_match": text.exact_match(p, refs), "anls": text.anls(p, refs)}
    if task == "vqa":
      scores["accuracy"] = vqa.vqa_accuracy(p, refs)
    for k, v in scores.items():
      totals[k] += v
    d, n = text.char_errors(p, refs)
    edits, ref_chars = edits + d, ref_chars + n
    ex["score"] = scores["accuracy" if task == "vqa" else "anls"]
  n = max(len(examples), 1)
  metrics = {k: v / n for k, v in totals.items()}
  if task == "ocr":
    metrics["cer"] = edits / ref_chars if ref_chars else float(edits > 0)
  metrics["num_examples"] = len(examples)
  return metrics, examples


def score(task: str, predictions: Sequence[dict], references: Sequence[dict], *,
          predictions_name: str = "predictions", vqvae=None, image_root: str | None = None,
          references_name: str = "references") -> tuple[dict, list[dict]]:
  """(metrics, per-example records with a `score` each, for the report) for one task. `segment` needs
  `vqvae` (the mask codec) and, for references without `height`/`width`, `image_root` (their images)."""
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
  examples, counts = match(predictions, references, predictions_name=predictions_name)
  if task == "detect":
    metrics, records = _score_detect(examples)
  elif task == "segment":
    metrics, records = _score_segment(examples, vqvae, image_root, references_name)
  elif task == "caption":
    metrics, records = _score_caption(examples)
  else:
    metrics, records = _score_answers(examples, task)
  for record in records:  # only detection and segmentation read these
    for key in ("objects", "gt", "boxes", "masks", "size", "reference_line"):
      record.pop(key, None)
  return {"task": task, **metrics, **counts}, records


def score_files(task: str, predictions_path: str, references_path: str, *, vqvae=None,
                image_root: str | None = None) -> tuple[dict, list[dict]]:
  predictions = jsonl.read_jsonl(predictions_path, required=("image", "prefix", "prediction"))
  references = jsonl.read_jsonl(references_path, required=("image", "prefix", "suffix"))
  return score(task, predictions, references, predictions_name=predictions_path, vqvae=vqvae,
               image_root=image_root or os.path.dirname(os.path.abspath(references_path)),
               references_name=references_path)
