"""Scoring `segment` answers: the mask codec, the reference masks, decoding and pasting (metrics: segmentation.py).

  codec: `--vqvae` (a codec .npz, or a model directory / workdir whose model.json names one), else the one
         the checkpoint's model.json names (`components.common.checkpoints.find_vqvae`)
  per (image, prefix): prediction and reference texts -> `suffix_to_masks` at the image's size (the row's
         `height`/`width`, else its reference masks' RLE size, else the image file's) -> `SegExample`
  ground truth: a reference row's `masks` ([{"label", "box" [y1, x1, y2, x2] normalised, "rle" COCO RLE
         {"size": [H, W], "counts"}}], one per object of its suffix, in order) when every row of the
         example has them; else the reference suffix decoded and pasted (then `miou_ceiling` is 1)
  -> `segmentation_metrics`, and per example the parsed objects (label, box, codes, score, rle) for
     predictions.jsonl and the report's overlays

Masks travel as COCO RLE (`counts` a string) past the metrics, so a large split does not hold every pasted
mask as a full-resolution array in the records.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from components.common.checkpoints import find_vqvae, read_model_json, resolve_checkpoint
from components.evaluate import boxes as boxes_lib
from components.evaluate.segmentation import SegExample, segmentation_metrics
from components.paligemma import load_vqvae
from components.paligemma.segmentation import OBJECT_SEPARATOR, suffix_to_masks

log = logging.getLogger(__name__)
PROMPT = "segment "
MATCH_IOU = 0.5  # a predicted object drawn solid in the report: matched with mask IoU at least this


def load_codec(vqvae: str | None, checkpoint: str | None = None) -> dict:
  """The mask codec: `vqvae` (an .npz, or a model directory / workdir naming one), else `checkpoint`'s."""
  if vqvae and vqvae.rstrip("/").endswith(".npz"):
    return load_vqvae(vqvae)
  source, flag = (vqvae, "--vqvae") if vqvae else (checkpoint, "--checkpoint")
  if not source:
    raise ValueError("--task segment needs the mask codec: give --vqvae PATH (a VQ-VAE .npz such as vae-oid.npz, "
                     "or a model directory downloaded with --vqvae)")
  resolved = resolve_checkpoint(source)
  path = find_vqvae(resolved, read_model_json(resolved))
  if path is None:
    raise ValueError(f"--task segment needs the mask codec, and {flag} {source} names none (no `vqvae` in its "
                     "model.json, nor in its base checkpoint's): give --vqvae PATH (e.g. vae-oid.npz), or "
                     "download the model with --vqvae")
  log.info("mask codec: %s", path)
  return load_vqvae(path)


def prompt_class(prefix: str) -> str:
  """`segment cat` -> `cat` (objects answered without a label are of this class)."""
  return boxes_lib.normalise_label(prefix[len(PROMPT):]) if prefix.startswith(PROMPT) else ""


def rle(mask: np.ndarray) -> dict:
  """bool [H, W] -> COCO RLE {"size": [H, W], "counts": str} (JSON-ready)."""
  encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def decode_rle(encoded: Mapping[str, Any]) -> np.ndarray:
  """COCO RLE (compressed `counts` string, or uncompressed list) -> bool [H, W]."""
  height, width = (int(v) for v in encoded["size"])
  counts = encoded["counts"]
  if isinstance(counts, list):
    encoded = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
  else:
    encoded = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
  return mask_utils.decode(encoded).astype(bool)


def _reference_masks(example: dict, height: int, width: int, where: str) -> list[np.ndarray] | None:
  if example["masks"] is None:
    return None
  masks = []
  for i, m in enumerate(example["masks"]):
    try:
      mask = decode_rle(m["rle"])
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f"{where}: mask {i + 1} is not {{\"label\", \"box\", \"rle\": {{\"size\": [H, W], "
                       f"\"counts\"}}}} ({type(e).__name__}: {e})") from None
    if mask.shape != (height, width):
      raise ValueError(f"{where}: mask {i + 1} is {mask.shape[0]}×{mask.shape[1]}, the image {height}×{width}")
    masks.append(mask)
  return masks


def _image_size(example: dict, image_root: str | None, where: str) -> tuple[int, int]:
  """(height, width): the reference row's, else its first mask's, else the image file's."""
  if example["size"] is not None:
    return example["size"]
  for m in example["masks"] or []:
    if isinstance(m, dict) and isinstance(m.get("rle"), dict) and "size" in m["rle"]:
      return tuple(int(v) for v in m["rle"]["size"])
  path = os.path.join(image_root, example["image"]) if image_root else example["image"]
  try:
    with Image.open(path) as im:
      return im.height, im.width
  except OSError as e:
    raise ValueError(f"{where}: the image size is needed to paste masks, and the row has no `height`/`width` and "
                     f"{path} cannot be read ({e}); give --images DIR or add the sizes") from None


def _objects(objects, scores, label: str) -> list[dict]:
  return [{"label": o.label or label, "box": [float(v) for v in o.box], "codes": [int(c) for c in o.codes],
           "score": float(s), "rle": rle(o.mask)} for o, s in zip(objects, scores)]


def score_segment(examples: list[dict], vqvae: Mapping[str, Any], image_root: str | None,
                  references_name: str = "references") -> tuple[dict, list[dict]]:
  """Metrics (segmentation.py's keys, plus `unreadable_reference_objects`) and one record per example with
  `score`, `matches`, `pred_objects` (the prediction parsed: label, box, codes, score, rle), `malformed`, and the
  report's `gt_boxes`/`pred_boxes`/`gt_masks`/`pred_masks`. `examples` come from `scoring.match`."""
  seg_examples, records, unreadable = [], [], 0
  if any(ex["masks"] is None for ex in examples) and any(ex["masks"] is not None for ex in examples):
    log.warning("some references have no `masks`: their decoded <seg> tokens stand in for the ground truth")
  for ex in examples:
    where = f"{references_name}, line {ex['reference_line']}"
    height, width = _image_size(ex, image_root, where)
    label = prompt_class(ex["prefix"])
    reference = OBJECT_SEPARATOR.join(r for r in ex["references"] if r.strip())
    ref = suffix_to_masks(reference, height, width, vqvae)
    if ref.malformed:
      unreadable += len(ref.malformed)
      log.warning("%s (image %r, prefix %r): reference objects left out, unreadable: %s", where, ex["image"],
                  ex["prefix"], "; ".join(f"{m.segment!r}: {m.reason}" for m in ref.malformed))
    truth = ref.objects
    masks = _reference_masks(ex, height, width, where)
    if masks is not None:
      if len(masks) != len(ref.objects):
        raise ValueError(f"{where}: {len(masks)} `masks` for the {len(ref.objects)} readable objects of its suffix; "
                         "give one mask per object, in the suffix's order")
      truth = [dataclasses.replace(o, mask=m) for o, m in zip(ref.objects, masks)]
    pred = suffix_to_masks(ex["prediction"], height, width, vqvae)
    scores = boxes_lib.box_confidences(ex["prediction"], pred.objects, ex.get("tokens"), ex.get("token_logprobs"))
    seg_examples.append(SegExample(pred.objects, truth, ref.objects, pred.malformed, scores, label,
                                   empty=not ex["prediction"].strip()))
    records.append({**ex, "reference": reference, "pred_objects": _objects(pred.objects, scores, label),
                    "gt_boxes": [[*o.box, o.label or label] for o in truth],
                    "gt_masks": [rle(o.mask) for o in truth],
                    "malformed": [{"segment": m.segment, "reason": m.reason} for m in pred.malformed]})
  metrics, per_example = segmentation_metrics(seg_examples)
  for record, result in zip(records, per_example):
    solid = {m["prediction"] for m in result["matches"] if m["mask_iou"] >= MATCH_IOU}
    objects = record["pred_objects"]
    record.update(score=result["score"], matches=result["matches"], pred_masks=[o["rle"] for o in objects],
                  pred_boxes=[[*o["box"], o["label"], o["score"], i in solid] for i, o in enumerate(objects)])
  metrics["unreadable_reference_objects"] = unreadable
  return metrics, records
