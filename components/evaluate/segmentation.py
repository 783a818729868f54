"""Segmentation metrics: big_vision's mask IoU and box accuracy, COCO mask mAP, and the codec's share.

Input: one `SegExample` per (image, prefix), with objects already parsed and pasted at full resolution
(`components.paligemma.suffix_to_masks`; `example_from_text` does it from the answer texts). Per
example, predictions are matched one-to-one to references of the same label by box: the assignment with
the largest total box IoU (Hungarian), pairs of IoU 0 never matched. On an example with one reference
and one prediction (RefCOCO, what big_vision evaluates) that is big_vision's pairing.

- `miou`: big_vision's mean mask IoU (big_vision/evaluators/proj/paligemma/transfers/segmentation.py):
  over reference objects, the IoU of its full-resolution mask and its matched prediction's pasted mask;
  0 for a reference without a match (big_vision: an invalid prediction scores 0). Extra predictions do
  not lower it (mask mAP counts them).
- `box_acc50` / `box_acc75`: big_vision's box accuracy: share of reference objects whose matched
  prediction's box (normalised, bins / 1023) has IoU >= 0.5 / 0.75 with the reference box.
- `mask_map` / `mask_map50`: COCO mask mAP@[.5:.95] / @.5 by pycocotools `COCOeval(iouType="segm")`,
  each example one COCO image, each label one category (RLE masks; prediction scores default to 1).
  A predicted label no reference and no example class names gets a category of its own (a false positive
  that COCO's mean leaves out, as for detection). None when no example has a reference object.
- `seg_token_acc`: share of the reference `<seg>` tokens (16 per reference object) that the matched
  prediction reproduces in the same position; unmatched references reproduce none.
- `miou_ceiling`: `miou` of the references' own tokens decoded and pasted (`reference_decoded`): what the
  codec allows. 1.0 when the references' masks are themselves decoded tokens.
- counts: `num_examples`, `num_gt_objects`, `num_pred_objects`, `malformed_segments` (unreadable pieces
  of predictions), `invalid_predictions` (examples whose prediction has no valid object but is not
  empty: big_vision's `invalid`), `empty_predictions`, `unknown_class_objects`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.optimize
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from components.evaluate import detection
from components.paligemma.segmentation import MalformedSegment, SegObject, suffix_to_masks

BOX_IOUS = (0.5, 0.75)


@dataclasses.dataclass
class SegExample:
  """One (image, prefix): parsed predictions and references, masks bool [H, W] at the image's size.

  `references` are the ground truth (their `codes`, from the reference suffix, score `seg_token_acc`;
  None leaves an object out of it); `reference_decoded` the reference suffix decoded and pasted (for
  `miou_ceiling`; None leaves the example out of it); `scores` one confidence per prediction (mAP ranks
  by it; default 1); `label` the example's class (`segment <class>`), given to objects without a label.
  """
  predictions: Sequence[SegObject]
  references: Sequence[SegObject]
  reference_decoded: Sequence[SegObject] | None = None
  malformed: Sequence[MalformedSegment] = ()
  scores: Sequence[float] | None = None
  label: str = ""
  empty: bool = False  # the prediction text was empty


def example_from_text(prediction: str, reference: str, height: int, width: int, vqvae: Mapping[str, Any],
                      *, reference_masks: Sequence[np.ndarray] | None = None, label: str = "",
                      scores: Sequence[float] | None = None) -> SegExample:
  """A `SegExample` from the answer texts. `reference_masks` (bool [H, W], one per reference object in
  order) are the ground truth; without them the decoded reference suffix stands in for it."""
  pred = suffix_to_masks(prediction, height, width, vqvae)
  ref = suffix_to_masks(reference, height, width, vqvae)
  if ref.malformed:
    raise ValueError(f"reference {reference!r} has unreadable objects: "
                     + "; ".join(f"{m.segment!r}: {m.reason}" for m in ref.malformed))
  references = ref.objects
  if reference_masks is not None:
    if len(reference_masks) != len(ref.objects):
      raise ValueError(f"{len(reference_masks)} reference masks for the {len(ref.objects)} objects of "
                       f"reference {reference!r}")
    references = [dataclasses.replace(o, mask=np.asarray(m, bool)) for o, m in zip(ref.objects, reference_masks)]
  return SegExample(pred.objects, references, ref.objects, pred.malformed, scores, label,
                    empty=not prediction.strip())


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """IoU of two normalised (y1, x1, y2, x2) boxes, big_vision's formula (empty boxes have area 0)."""
  inter = _area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
  union = _area(*a) + _area(*b) - inter
  return inter / union if union > 0 else 0.0


def _area(y1, x1, y2, x2) -> float:
  return max(x2 - x1, 0.0) * max(y2 - y1, 0.0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
  """IoU of two bool masks of one size (0 when both are empty, as big_vision's 0/0 guard would give)."""
  inter = int(np.logical_and(a, b).sum())
  union = int(a.sum()) + int(b.sum()) - inter
  return inter / union if union else 0.0


def match_objects(predictions: Sequence[SegObject], references: Sequence[SegObject], label: str = ""
                  ) -> list[tuple[int, int, float]]:
  """One-to-one (prediction index, reference index, box IoU): same label, largest total box IoU, IoU > 0."""
  if not predictions or not references:
    return []
  ious = np.array([[box_iou(p.box, r.box) if (p.label or label) == (r.label or label) else 0.0
                    for r in references] for p in predictions])
  rows, cols = scipy.optimize.linear_sum_assignment(ious, maximize=True)
  return [(int(i), int(j), float(ious[i, j])) for i, j in zip(rows, cols) if ious[i, j] > 0]


def _ious(predictions, references, matches) -> tuple[list[float], list[float]]:
  """Per reference: (mask IoU, box IoU) with its match, 0 for none."""
  masks, boxes = [0.0] * len(references), [0.0] * len(references)
  for i, j, iou in matches:
    masks[j], boxes[j] = mask_iou(predictions[i].mask, references[j].mask), iou
  return masks, boxes


def _rle(mask: np.ndarray) -> dict:
  return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def mask_map(examples: Sequence[SegExample]) -> tuple[float | None, float | None, int]:
  """(COCO mask mAP@[.5:.95], mAP@.5, predicted objects of unknown classes) by pycocotools' segm eval."""
  categories: dict[str, int] = {}
  category = lambda name: categories.setdefault(name, len(categories) + 1)
  images, gt, dt = [], [], []
  for image_id, ex in enumerate(examples, start=1):
    height, width = _size(ex)
    images.append({"id": image_id, "height": height, "width": width})
    if ex.label:
      category(ex.label)
    for r in ex.references:
      rle = _rle(r.mask)
      gt.append({"id": len(gt) + 1, "image_id": image_id, "category_id": category(r.label or ex.label),
                 "segmentation": rle, "area": float(mask_utils.area(rle)),
                 "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0})
  known = set(categories)
  for image_id, ex in enumerate(examples, start=1):
    scores = ex.scores if ex.scores is not None else [1.0] * len(ex.predictions)
    for p, score in zip(ex.predictions, scores, strict=True):
      rle = _rle(p.mask)
      dt.append({"id": len(dt) + 1, "image_id": image_id, "category_id": category(p.label or ex.label),
                 "segmentation": rle, "area": float(mask_utils.area(rle)), "bbox": list(mask_utils.toBbox(rle)),
                 "score": float(score), "iscrowd": 0})
  unknown = sum(1 for d in dt if d["category_id"] not in {categories[k] for k in known})
  if not gt:
    return None, None, unknown
  cats = [{"id": i, "name": name} for name, i in categories.items()]
  coco = detection._coco  # noqa: SLF001 (the same quiet COCO builder as detection's box mAP)
  evaluator = COCOeval(coco(images, cats, gt), coco(images, cats, dt), iouType="segm")
  with contextlib.redirect_stdout(io.StringIO()):
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  stats = [None if s < 0 else float(s) for s in evaluator.stats[:2]]
  return stats[0], stats[1], unknown


def _size(ex: SegExample) -> tuple[int, int]:
  for o in list(ex.references) + list(ex.predictions) + list(ex.reference_decoded or []):
    if o.mask is not None:
      return o.mask.shape
  return 1, 1  # nothing to draw: any size does


def segmentation_metrics(examples: Sequence[SegExample]) -> tuple[dict, list[dict]]:
  """(metrics, one record per example: `score` (its mean mask IoU) and `matches`, for the report)."""
  mask_ious, box_ious, ceiling, records = [], [], [], []
  tokens_hit = tokens_total = 0
  for ex in examples:
    matches = match_objects(ex.predictions, ex.references, ex.label)
    masks, boxes = _ious(ex.predictions, ex.references, matches)
    mask_ious += masks
    box_ious += boxes
    for i, j, _ in matches:
      if ex.references[j].codes is not None:
        tokens_hit += int((np.asarray(ex.predictions[i].codes) == np.asarray(ex.references[j].codes)).sum())
    tokens_total += sum(len(r.codes) for r in ex.references if r.codes is not None)
    if ex.reference_decoded is not None:
      decoded = ex.reference_decoded
      ceiling += _ious(decoded, ex.references, match_objects(decoded, ex.references, ex.label))[0]
    records.append({"score": float(np.mean(masks)) if masks else float(not ex.predictions),
                    "matches": [{"prediction": i, "reference": j, "box_iou": b, "mask_iou": masks[j]}
                                for i, j, b in matches]})
  map_all, map50, unknown = mask_map(examples)
  mean = lambda xs: float(np.mean(xs)) if xs else None
  metrics = {
      "miou": mean(mask_ious),
      **{f"box_acc{round(t * 100)}": mean([float(b >= t) for b in box_ious]) for t in BOX_IOUS},
      "mask_map": map_all, "mask_map50": map50,
      "seg_token_acc": tokens_hit / tokens_total if tokens_total else None,
      "miou_ceiling": mean(ceiling),
      "num_examples": len(examples),
      "num_gt_objects": sum(len(ex.references) for ex in examples),
      "num_pred_objects": sum(len(ex.predictions) for ex in examples),
      "malformed_segments": sum(len(ex.malformed) for ex in examples),
      "invalid_predictions": sum(1 for ex in examples if not ex.predictions and not ex.empty),
      "empty_predictions": sum(1 for ex in examples if ex.empty),
      "unknown_class_objects": unknown,
  }
  return metrics, records
