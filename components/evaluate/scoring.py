"""Matching predictions to references and scoring them by task: the core of `evaluate score`.

References are rows `image`, `prefix`, `suffix` (a dataset's jsonl); several rows with the same
(image, prefix) are several reference answers (several captions; VQA's human answers; for detection,
their objects together); a row may also carry an `answers` list. Predictions are rows `image`,
`prefix`, `prediction`, optionally `tokens` (each generated token's text) and `token_logprobs`.
A reference without a prediction is scored as an empty answer, a prediction without a reference is
left out; both are counted and logged.
"""
from __future__ import annotations

import logging
from typing import Sequence

from components.evaluate import detection, jsonl, text, vqa

log = logging.getLogger(__name__)
TASKS = ("detect", "caption", "vqa", "ocr")
MAX_LOGGED, MAX_LISTED = 20, 500  # unreadable detection segments: logged / kept in metrics.json


def _key(row: dict) -> tuple[str, str]:
  return str(row["image"]), str(row["prefix"])


def match(predictions: Sequence[dict], references: Sequence[dict], *, predictions_name: str = "predictions",
          ) -> tuple[list[dict], dict]:
  """Examples (one per reference key, in reference order) and the counts of what did not match."""
  refs: dict[tuple[str, str], list[str]] = {}
  for row in references:
    answers = row.get("answers")
    refs.setdefault(_key(row), []).extend(answers if isinstance(answers, list) else [row["suffix"]])
  preds: dict[tuple[str, str], dict] = {}
  for row in predictions:
    key = _key(row)
    if key in preds:
      raise ValueError(f"{predictions_name}, line {row.get('_line', '?')}: a second prediction for image "
                       f"{key[0]!r} with prefix {key[1]!r} (first on line {preds[key].get('_line', '?')}); "
                       "keep one prediction per (image, prefix)")
    preds[key] = row
  missing = [k for k in refs if k not in preds]
  unmatched = [k for k in preds if k not in refs]
  for what, keys in (("references without a prediction (scored as empty answers)", missing),
                     ("predictions without a reference (left out)", unmatched)):
    if keys:
      log.warning("%d %s, e.g. image %r, prefix %r", len(keys), what, *keys[0])
  examples = []
  for key, answers in refs.items():
    pred = preds.get(key, {})
    examples.append({"image": key[0], "prefix": key[1], "references": [str(a) for a in answers],
                     "prediction": str(pred.get("prediction", "")), "tokens": pred.get("tokens"),
                     "token_logprobs": pred.get("token_logprobs"), "line": pred.get("_line")})
  return examples, {"missing_predictions": len(missing), "unmatched_predictions": len(unmatched)}


def _score_detect(examples: list[dict]) -> tuple[dict, list[dict]]:
  for ex in examples:
    ex["reference"] = " ; ".join(r for r in ex["references"] if r.strip())
  metrics, records = detection.score_detection(examples)
  malformed = [{"line": r["line"], "image": r["image"], "prefix": r["prefix"], **m}
               for r in records for m in r["malformed"]]
  for m in malformed[:MAX_LOGGED]:
    log.warning("prediction line %s (image %r, prefix %r): segment %r is unreadable (%s); counted as a miss",
                m["line"], m["image"], m["prefix"], m["segment"], m["reason"])
  if len(malformed) > MAX_LOGGED:
    log.warning("... and %d more unreadable segments (the first %d are listed in metrics.json)",
                len(malformed) - MAX_LOGGED, MAX_LISTED)
  metrics["malformed"] = malformed[:MAX_LISTED]
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
          predictions_name: str = "predictions") -> tuple[dict, list[dict]]:
  """(metrics, per-example records with a `score` each, for the report) for one task."""
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
  examples, counts = match(predictions, references, predictions_name=predictions_name)
  if task == "detect":
    metrics, records = _score_detect(examples)
  elif task == "caption":
    metrics, records = _score_caption(examples)
  else:
    metrics, records = _score_answers(examples, task)
  return {"task": task, **metrics, **counts}, records


def score_files(task: str, predictions_path: str, references_path: str) -> tuple[dict, list[dict]]:
  predictions = jsonl.read_jsonl(predictions_path, required=("image", "prefix", "prediction"))
  references = jsonl.read_jsonl(references_path, required=("image", "prefix", "suffix"))
  return score(task, predictions, references, predictions_name=predictions_path)
