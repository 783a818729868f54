"""Detection metrics: COCO-style mAP with pycocotools, plus precision/recall at IoU 0.5.

Each (image, prefix) pair is one COCO "image" (a picture asked about two class lists is two queries).
Boxes live in the unit square (normalised corners): IoU does not change under per-image scaling, and we
report no area-range metrics, the only ones that would. Categories are every label seen in the
references, in the `detect a ; b` prompts and in the predictions: a predicted label that no reference
and no prompt mentions is an *unknown class*; it gets a category of its own, so it is a false positive
for precision, while COCOeval leaves classes without ground truth out of the mean AP, as COCO does.
Undefined values (mAP when no image has a ground-truth object, precision when nothing was predicted)
are reported as None rather than as a number that would look like a score.
"""
from __future__ import annotations

import contextlib
import io
import logging

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from components.evaluate import boxes as boxes_lib

log = logging.getLogger(__name__)


def prompt_classes(prefix: str) -> list[str]:
  """Classes asked for by a `detect a ; b` prompt (none for any other prompt)."""
  if not prefix.startswith("detect "):
    return []
  return [c for c in (boxes_lib.normalise_label(c) for c in prefix[len("detect "):].split(";")) if c]


def _coco(images: list[dict], categories: list[dict], annotations: list[dict]) -> COCO:
  coco = COCO()
  coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
  with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress we do not want in logs
    coco.createIndex()
  return coco


def _annotation(box: boxes_lib.Box, ann_id: int, image_id: int, **fields) -> dict:
  x, y, w, h = box.xywh()
  return {"id": ann_id, "image_id": image_id, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0, **fields}


def _ratio(num: float, den: float) -> float | None:
  return float(num / den) if den else None


def _f1(p: float | None, r: float | None) -> float | None:
  if p is None or r is None:
    return None
  return 2 * p * r / (p + r) if p + r else 0.0


def score_detection(examples: list[dict]) -> tuple[dict, list[dict]]:
  """Metrics over matched examples, and one record per example for the report.

  Each example has `reference` (ground-truth objects as loc text), `prediction`, `prefix`, and optionally
  `tokens` / `token_logprobs` for box confidences (see `boxes.box_confidences`). `gt` (a list of `Box`)
  replaces the loc text as ground truth and `boxes` (a list of (`Box`, score)) the predicted text, when
  given (another detector's boxes, scored against the exact boxes rather than their 1/1023 bins).
  """
  images, gt_anns, dt_anns, records = [], [], [], []
  labels: dict[str, int] = {}
  malformed_total = reference_problems = 0

  def category(label: str) -> int:
    return labels.setdefault(label, len(labels) + 1)

  for image_id, ex in enumerate(examples, start=1):
    gt, gt_bad = (ex["gt"], []) if ex.get("gt") is not None else boxes_lib.parse_detections(ex["reference"])
    if gt_bad:
      reference_problems += len(gt_bad)
      log.warning("reference for %s (%r) has unreadable objects, left out: %s",
                  ex.get("image"), ex.get("prefix"), "; ".join(f"{m.segment!r}: {m.reason}" for m in gt_bad))
    for c in prompt_classes(ex.get("prefix", "")):
      category(c)
    for b in gt:
      gt_anns.append(_annotation(b, len(gt_anns) + 1, image_id, category_id=category(b.label)))
    if ex.get("boxes") is not None:  # another detector's boxes, each with its own score
      pred, conf, bad = [b for b, _ in ex["boxes"]], [c for _, c in ex["boxes"]], []
    else:
      pred, bad = boxes_lib.parse_detections(ex["prediction"])
      conf = boxes_lib.box_confidences(ex["prediction"], pred, ex.get("tokens"), ex.get("token_logprobs"))
    malformed_total += len(bad)
    first_dt = len(dt_anns) + 1
    for b, c in zip(pred, conf):
      # Categories of predicted labels are assigned below, once every known label has its id.
      dt_anns.append(_annotation(b, len(dt_anns) + 1, image_id, label=b.label, score=c))
    images.append({"id": image_id})
    records.append({**ex, "gt_boxes": [[b.y1, b.x1, b.y2, b.x2, b.label] for b in gt],
                    "pred_boxes": [[b.y1, b.x1, b.y2, b.x2, b.label, c] for b, c in zip(pred, conf)],
                    "_dt_ids": list(range(first_dt, first_dt + len(pred))),
                    "malformed": [{"segment": m.segment, "reason": m.reason} for m in bad]})

  known = set(labels)  # before predictions add theirs: what references and prompts name
  for d in dt_anns:
    d["category_id"] = category(d.pop("label"))
  categories = [{"id": i, "name": name} for name, i in labels.items()]
  gt_coco = _coco(images, categories, gt_anns)
  dt_coco = _coco(images, categories, dt_anns)

  evaluator = COCOeval(gt_coco, dt_coco, iouType="bbox")
  with contextlib.redirect_stdout(io.StringIO()):
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()

  # Matches at IoU 0.5 over all areas: evalImgs runs over (category, area range, image).
  assert evaluator.params.iouThrs[0] == 0.5
  all_areas = evaluator.params.areaRng[0]
  matched_dt: set[int] = set()
  per_image = {i["id"]: [0, 0, 0] for i in images}  # tp, predicted, ground truth
  per_class = {name: [0, 0, 0] for name in labels}
  names = {i: name for name, i in labels.items()}
  for e in evaluator.evalImgs:
    if e is None or e["aRng"] != all_areas:
      continue
    hits = e["dtMatches"][0] > 0
    tp, n_dt, n_gt = int(hits.sum()), len(e["dtIds"]), int((~e["gtIgnore"].astype(bool)).sum())
    matched_dt.update(d for d, h in zip(e["dtIds"], hits) if h)
    for counts in (per_image[e["image_id"]], per_class[names[e["category_id"]]]):
      counts[0] += tp; counts[1] += n_dt; counts[2] += n_gt

  tp, n_dt, n_gt = (sum(c[i] for c in per_image.values()) for i in range(3))
  precision, recall = _ratio(tp, n_dt), _ratio(tp, n_gt)
  stats = [None if s < 0 else float(s) for s in evaluator.stats[:3]] if gt_anns else [None] * 3
  precisions = evaluator.eval["precision"]  # [T iou, R recall, K class, A area, M max dets]

  def ap(k: int, iou: slice) -> float | None:
    p = precisions[iou, :, k, 0, -1]
    return float(p[p > -1].mean()) if (p > -1).any() else None

  class_table = {}
  for k, cat_id in enumerate(evaluator.params.catIds):
    name = names[cat_id]
    c_tp, c_dt, c_gt = per_class[name]
    if name not in known and not c_gt:
      continue  # unknown classes are counted below, not listed as classes
    class_table[name] = {"ap": ap(k, slice(None)), "ap50": ap(k, slice(0, 1)), "precision": _ratio(c_tp, c_dt),
                         "recall": _ratio(c_tp, c_gt), "num_gt": c_gt, "num_pred": c_dt}

  for image, rec in zip(images, records):
    c_tp, c_dt, c_gt = per_image[image["id"]]
    # An image with nothing to find and nothing found is right; the report sorts on this.
    rec["score"] = 1.0 if not c_dt and not c_gt else (2 * c_tp / (c_dt + c_gt))
    rec["pred_boxes"] = [b + [d in matched_dt] for b, d in zip(rec["pred_boxes"], rec.pop("_dt_ids"))]

  metrics = {
      "map": stats[0], "map50": stats[1], "map75": stats[2],
      "precision": precision, "recall": recall, "f1": _f1(precision, recall),
      "num_examples": len(examples), "num_gt_boxes": n_gt, "num_pred_boxes": n_dt,
      "malformed_segments": malformed_total,
      "unknown_class_boxes": sum(1 for d in dt_anns if names[d["category_id"]] not in known),
      "empty_predictions": sum(1 for ex in examples if not (ex["boxes"] if ex.get("boxes") is not None
                                                            else ex["prediction"].strip())),
      "unreadable_reference_objects": reference_problems,
      "per_class": class_table,
  }
  return metrics, records
