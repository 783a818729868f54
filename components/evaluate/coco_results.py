"""COCO results JSON: other detectors' boxes in (`evaluate score`), ours out (`coco_results.json`).

    [{"image_id": 397133, "category_id": 18, "bbox": [x, y, w, h], "score": 0.93}, ...]

is what pycocotools' `loadRes` reads and what ultralytics (`save_json`), Florence-2 post-processing scripts
and most detectors write: one box per entry, in pixels of the source image as displayed (EXIF orientation
applied). Boxes are divided by that image's size (the dataset rows' `source_width`/`source_height`, else
`width`/`height`) and scored as given, with the detector's `score` for ranking (1.0 when absent).

Which image: `image_id` is the dataset's `source_id` (convert records COCO's image ids), else the file
stem of `source_image` (else of `image`); a numeric stem is also its integer (ultralytics writes
`int(stem)` for numeric file names, the stem otherwise). Which class: `category_id` through, in order,
`--categories FILE` (a COCO file's `categories`, or {"id": "name"}), report.json's `source_categories`
(COCO sources), else the dataset's classes in order numbered from 1 (what ultralytics writes for a
dataset that is not COCO); an entry may give a `label` (the class name) instead.
"""
from __future__ import annotations

import collections
import json
import logging
import math
import os
import posixpath
from typing import Sequence

from components.evaluate import boxes as boxes_lib
from components.evaluate import detection, jsonl, keys

log = logging.getLogger(__name__)
REPORT = "report.json"  # convert's, beside the split files
RESULTS = "coco_results.json"


def is_coco_results(path: str) -> bool:
  """A JSON array (COCO results) rather than JSON lines (our predictions)."""
  with open(path, encoding="utf-8") as f:
    head = f.read(4096).lstrip()
  return head.startswith("[")


class DatasetIds:
  """The ids COCO results use for the images and classes of `references` (see the module note)."""

  def __init__(self, references: Sequence[dict], dataset_dir: str | None, categories_file: str | None = None):
    self.rows: dict[str, dict] = {}  # image key -> its first reference row
    self.prefixes: dict[str, list[str]] = collections.defaultdict(list)
    for row in references:
      key = keys.image_key(row)
      self.rows.setdefault(key, row)
      if row["prefix"] not in self.prefixes[key]:
        self.prefixes[key].append(row["prefix"])
    self.by_source_id = {_id(r["source_id"]): k for k, r in self.rows.items() if r.get("source_id") is not None}
    self.by_stem: dict = collections.defaultdict(list)
    for key in self.rows:
      stem = posixpath.splitext(posixpath.basename(key.replace("\\", "/")))[0]
      self.by_stem[stem].append(key)
      if stem.isdigit():
        self.by_stem[int(stem)].append(key)
    self.categories, self.categories_from = self._categories(references, dataset_dir, categories_file)

  def _categories(self, references, dataset_dir, categories_file) -> tuple[dict, str]:
    if categories_file:
      return _read_categories(categories_file), categories_file
    report_path = os.path.join(dataset_dir, REPORT) if dataset_dir else None
    report = {}
    if report_path and os.path.isfile(report_path):
      with open(report_path, encoding="utf-8") as f:
        report = json.load(f)
    if report.get("source_categories"):
      return ({_id(k): boxes_lib.normalise_label(v) for k, v in report["source_categories"].items()},
              f"{report_path} (source_categories)")
    classes = report.get("classes") or next(
        (detection.prompt_classes(r["prefix"]) for r in references if detection.prompt_classes(r["prefix"])), [])
    where = f"{report_path} (classes)" if report.get("classes") else "the detect prompt's classes"
    return {i: boxes_lib.normalise_label(c) for i, c in enumerate(classes, start=1)}, f"{where}, numbered from 1"

  def image_of(self, image_id) -> str | None:
    """The image key `image_id` names, or None; an id several file stems share is an error."""
    if image_id in self.by_source_id:
      return self.by_source_id[image_id]
    found = self.by_stem.get(image_id, [])
    if len(found) > 1:
      raise ValueError(f"image_id {image_id!r} is the file name of several images ({', '.join(found[:4])}); "
                       "their COCO results cannot be told apart")
    return found[0] if found else None

  def id_of(self, key: str):
    """The image_id COCO results give image `key` (inverse of `image_of`), or None when it has none."""
    row = self.rows[key]
    if row.get("source_id") is not None:
      return row["source_id"]
    stem = posixpath.splitext(posixpath.basename(key.replace("\\", "/")))[0]
    if len(self.by_stem[stem]) > 1:
      return None
    return int(stem) if stem.isdigit() else stem

  def frame(self, key: str, where: str) -> tuple[float, float]:
    """(width, height) of the source image: the pixels COCO results are in."""
    row = self.rows[key]
    w, h = row.get("source_width") or row.get("width"), row.get("source_height") or row.get("height")
    if not w or not h:
      raise ValueError(f"{where}: the reference row of {key!r} has no width/height (components.convert writes "
                       "them); pixel boxes cannot be placed on the image")
    return float(w), float(h)


def _id(value):
  """Ids as COCO results spell them: numbers as ints (JSON object keys arrive as strings)."""
  return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value


def _read_categories(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"--categories {path}: cannot read it as JSON ({e})") from None
  if isinstance(data, dict) and isinstance(data.get("categories"), list):
    return {_id(c["id"]): boxes_lib.normalise_label(c["name"]) for c in data["categories"]}
  if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
    return {_id(k): boxes_lib.normalise_label(v) for k, v in data.items()}
  raise ValueError(f"--categories {path}: expected a COCO file with 'categories' or an object {{\"id\": \"name\"}}")


def read(path: str, references: Sequence[dict], ids: DatasetIds) -> list[dict]:
  """Prediction rows (one per reference image and prompt, `boxes` in unit-square corners) from a COCO
  results file. Entries for images the references do not have are counted and logged, not scored."""
  try:
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e})") from None
  if not isinstance(results, list):
    raise ValueError(f"{path}: expected a JSON list of {{image_id, category_id, bbox, score}} (COCO results)")
  boxes: dict[str, list[dict]] = collections.defaultdict(list)
  unknown_images, no_score = collections.Counter(), 0
  for i, entry in enumerate(results, start=1):
    where = f"{path}, result {i}"
    if not isinstance(entry, dict) or "image_id" not in entry or "bbox" not in entry:
      raise ValueError(f"{where}: expected {{\"image_id\", \"category_id\", \"bbox\": [x, y, w, h], \"score\"}}, "
                       f"got {entry!r:.200}")
    key = ids.image_of(entry["image_id"])
    if key is None:
      unknown_images[entry["image_id"]] += 1
      continue
    label = _label(entry, ids, where)
    try:
      x, y, w, h = (float(v) for v in entry["bbox"])
      score = float(entry.get("score", 1.0))
    except (TypeError, ValueError):
      raise ValueError(f"{where}: bbox {entry['bbox']!r} is not [x, y, width, height] or score "
                       f"{entry.get('score')!r} is not a number") from None
    if not all(map(math.isfinite, (x, y, w, h, score))) or w < 0 or h < 0:
      raise ValueError(f"{where}: bbox {entry['bbox']!r} / score {entry.get('score')!r} must be finite, w and h >= 0")
    no_score += "score" not in entry
    width, height = ids.frame(key, where)
    boxes[key].append({"label": label, "box": [x / width, y / height, (x + w) / width, (y + h) / height],
                       "score": score})
  if unknown_images:
    example = next(iter(unknown_images))
    log.warning("%s: %d boxes of %d image ids the references do not have were left out, e.g. image_id %r",
                path, sum(unknown_images.values()), len(unknown_images), example)
  if no_score:
    log.warning("%s: %d boxes without a score were ranked as score 1.0", path, no_score)
  log.info("%s: %d boxes on %d of %d images (categories from %s)", path, sum(map(len, boxes.values())),
           len(boxes), len(ids.rows), ids.categories_from)
  rows = []
  for key, prefixes in ids.prefixes.items():
    per_prefix = {p: [] for p in prefixes}
    for b in boxes.get(key, []):
      asked = [p for p in prefixes if b["label"] in detection.prompt_classes(p)]
      for p in asked or prefixes[:1]:  # a class no prompt asks for: an unknown class of the first prompt
        per_prefix[p].append(b)
    ref = ids.rows[key]
    for prefix, found in per_prefix.items():
      rows.append({"image": ref["image"], **({"source_image": ref["source_image"]} if ref.get("source_image") else {}),
                   "prefix": prefix, "prediction": boxes_lib.loc_text(found), "boxes": found})
  return rows


def _label(entry: dict, ids: DatasetIds, where: str) -> str:
  if "category_id" not in entry and isinstance(entry.get("label"), str):
    return boxes_lib.normalise_label(entry["label"])
  category = _id(entry.get("category_id"))
  if category not in ids.categories:
    known = ", ".join(f"{k}: {v}" for k, v in list(ids.categories.items())[:12])
    raise ValueError(f"{where}: category_id {entry.get('category_id')!r} is not one of the dataset's categories "
                     f"({known}; from {ids.categories_from}); give --categories FILE mapping the detector's ids "
                     "to class names")
  return ids.categories[category]


def write(path: str, records: Sequence[dict], ids: DatasetIds) -> int:
  """Writes the scored detection `records` as COCO results; returns how many boxes. Boxes of labels with
  no category id (unknown classes) and images with no id cannot be written and are counted in the log."""
  by_name = {}
  for category_id, name in ids.categories.items():
    by_name.setdefault(name, category_id)
  out, no_category, no_image = [], 0, 0
  for record in records:
    image_id = ids.id_of(record["key"]) if record.get("key") in ids.rows else None
    if image_id is None:
      no_image += len(record.get("pred_boxes") or [])
      continue
    width, height = ids.frame(record["key"], path)
    for y1, x1, y2, x2, label, score, *_ in record.get("pred_boxes") or []:
      if label not in by_name:
        no_category += 1
        continue
      out.append({"image_id": image_id, "category_id": by_name[label], "score": score,
                  "bbox": [x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height]})
  if no_category or no_image:
    log.warning("%s: left out %d boxes of classes without a category id and %d boxes of images without an id",
                path, no_category, no_image)
  jsonl.write_json(path, out)
  return len(out)
