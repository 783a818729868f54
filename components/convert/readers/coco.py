"""COCO JSON: `images`, `annotations` (bbox = [x, y, width, height] in pixels), `categories`.

Layouts found (a path to a single `.json` file works too):
- Roboflow's COCO export: `{train,valid,test}/_annotations.coco.json`, images beside each file;
- COCO's own: `annotations/instances_{train,val}2017.json` with images in `{train,val}2017/` or `images/`;
- any `*.json` in the root (split from the file name when it says one).
Detection: one row per image, images without annotations kept as examples with no objects.
Segmentation: one row per image with each annotation's `segmentation` (polygons in pixels, or RLE with
`counts` a list or COCO's compressed string); crowd regions (`iscrowd` 1) are not one instance: dropped.
Captioning: one row per caption annotation (`captions_*.json`).
"""
from __future__ import annotations

import collections
import glob
import json
import os

from components.convert.masks import polygon_problem
from components.convert.readers.common import join_rel, rel, split_dirs, split_from_filename
from components.convert.rows import Issue, Mask, Obj, Row, Source

ROBOFLOW_FILE = "_annotations.coco.json"


def _find_files(path: str) -> tuple[str, list[tuple[str, str | None]]]:
  if os.path.isfile(path):
    return os.path.dirname(os.path.abspath(path)), [(path, split_from_filename(path))]
  nested = split_dirs(path, ROBOFLOW_FILE)
  if nested:
    return path, [(os.path.join(path, d, ROBOFLOW_FILE), s) for s, d in nested.items()]
  files = sorted(glob.glob(os.path.join(path, "*.json")) + glob.glob(os.path.join(path, "annotations", "*.json")))
  if not files:
    raise FileNotFoundError(f"no COCO .json in {path}; expected {{train,valid,test}}/{ROBOFLOW_FILE}, "
                            "annotations/instances_*.json or a .json file")
  splits = [(f, split_from_filename(f)) for f in files]
  return path, splits if len(splits) > 1 or any(s for _, s in splits) else [(files[0], None)]


def _image_path(root: str, json_dir: str, file_name: str, json_name: str) -> str:
  """The image's path relative to the root: beside the json, in images/, or in COCO's `{train2017}/`."""
  stem = os.path.splitext(os.path.basename(json_name))[0].split("_")[-1]  # instances_val2017 -> val2017
  candidates = [join_rel(json_dir, file_name), join_rel(json_dir, "images", file_name), join_rel(file_name),
                join_rel("images", file_name), join_rel(stem, file_name), join_rel("images", stem, file_name)]
  for candidate in candidates:
    if os.path.isfile(os.path.join(root, candidate)):
      return candidate
  return candidates[0]  # missing: reported under the name most layouts use


def class_list(categories: list[dict], used_ids: set) -> list[dict]:
  """Categories by id, without Roboflow's unused parent category (the one the others name as supercategory)."""
  parents = {c.get("supercategory") for c in categories}
  return [c for c in sorted(categories, key=lambda c: c["id"]) if c["id"] in used_ids or c["name"] not in parents]


def read(path: str, task: str, **_) -> Source:
  if task not in ("detect", "segment", "caption"):
    raise ValueError(f"COCO input supports --task detect, segment or caption, not {task!r}")
  root, files = _find_files(path)
  rows, issues, classes, source_categories = [], [], [], {}
  for json_path, split in files:
    name = rel(json_path, root)
    json_dir = rel(os.path.dirname(os.path.abspath(json_path)), root)
    with open(json_path, encoding="utf-8") as f:
      try:
        coco = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{json_path} is not valid JSON ({e}); re-export the annotations") from None
    if not isinstance(coco, dict) or "images" not in coco:
      raise ValueError(f"{json_path} has no 'images' list; is it a COCO file?")
    # An image id used by two images cannot say which image its annotations belong to: all of them are
    # rejected (reported per image, or per caption), and none of their boxes is attached to either image.
    entries = collections.defaultdict(list)
    for img in coco["images"]:
      entries[img.get("id")].append(img)
    shared = {image_id: imgs for image_id, imgs in entries.items() if len(imgs) > 1}
    images = {image_id: imgs[0] for image_id, imgs in entries.items() if image_id not in shared}
    per_image = {image_id: [] for image_id in entries}
    for i, ann in enumerate(coco.get("annotations", [])):
      if ann.get("image_id") not in entries:
        issues.append(Issue(name, f"annotation {ann.get('id', i)}",
                            f"refers to image id {ann.get('image_id')!r}, which is not in 'images'; fix or delete it"))
        continue
      per_image[ann["image_id"]].append(ann)
    for image_id, imgs in shared.items():
      files = ", ".join(str(img.get("file_name", "")) for img in imgs)
      reason = (f"image id {image_id!r} is used by {len(imgs)} images ({files}): its annotations cannot be told "
                "apart; give each image its own id")
      if task == "caption":  # the rows are the captions, which belong to no one image
        issues += [Issue(name, f"annotation {ann.get('id')}", reason) for ann in per_image[image_id] if "caption" in ann]
      else:
        issues += [Issue(name, image_id, reason, image=_image_path(root, json_dir, str(img.get("file_name", "")), name))
                   for img in imgs]
    categories = {c["id"]: c["name"] for c in coco.get("categories", [])}
    source_categories = {**categories, **source_categories}  # the first file's name wins a clash
    used = {a.get("category_id") for anns in per_image.values() for a in anns}
    classes += [c["name"] for c in class_list(coco.get("categories", []), used)]
    for image_id, img in images.items():
      image = _image_path(root, json_dir, str(img.get("file_name", "")), name)
      declared = (int(img["width"]), int(img["height"])) if img.get("width") and img.get("height") else None
      anns = per_image[image_id]
      if task == "caption":
        for ann in anns:
          if "caption" in ann:
            rows.append(Row(image, name, image_id, split, prefix="caption en", suffix=str(ann["caption"]).strip()))
        continue
      if task == "segment":
        rows.append(_segment_row(Row(image, name, image_id, split, masks=[], declared_size=declared,
                                     source_id=image_id), anns, categories))
        continue
      row = Row(image, name, image_id, split, objects=[], declared_size=declared, source_id=image_id)
      for ann in anns:
        if ann.get("category_id") not in categories:
          row.repairs.append(f"annotation {ann.get('id')} dropped: unknown category id {ann.get('category_id')!r}")
        elif (box := _xywh(ann.get("bbox"))) is None:
          row.repairs.append(f"annotation {ann.get('id')} dropped: bbox {ann.get('bbox')!r} is not [x, y, w, h]")
        else:
          x, y, w, h = box
          row.objects.append(Obj(categories[ann["category_id"]], (x, y, x + w, y + h)))
      rows.append(row)
  return Source(root=root, rows=rows, classes=list(dict.fromkeys(classes)) or None, issues=issues,
                categories=source_categories if task == "detect" else None)


def _segment_row(row: Row, anns: list[dict], categories: dict) -> Row:
  """The image's instance masks; unusable annotations and polygons dropped as repairs of the row."""
  for ann in anns:
    what = f"annotation {ann.get('id')}"
    segmentation = ann.get("segmentation")
    if ann.get("category_id") not in categories:
      row.repairs.append(f"{what} dropped: unknown category id {ann.get('category_id')!r}")
    elif ann.get("iscrowd"):
      row.repairs.append(f"{what} ({categories[ann['category_id']]!r}) dropped: a crowd region (iscrowd), not one "
                         "instance")
    elif isinstance(segmentation, dict):
      row.masks.append(Mask(categories[ann["category_id"]], "rle", segmentation, what))
    elif isinstance(segmentation, list) and segmentation:
      polygons = []
      for k, polygon in enumerate(segmentation, start=1):
        if (problem := polygon_problem(polygon)) is not None:
          row.repairs.append(f"{what} polygon {k} dropped: {problem}")
        else:
          polygons.append([float(v) for v in polygon])
      if polygons:
        row.masks.append(Mask(categories[ann["category_id"]], "polygons", polygons, what))
      else:
        row.repairs.append(f"{what} ({categories[ann['category_id']]!r}) dropped: no usable polygon")
    else:
      row.repairs.append(f"{what} dropped: no 'segmentation' (polygons or RLE); --task segment needs masks")
  return row


def _xywh(bbox) -> tuple[float, float, float, float] | None:
  try:
    x, y, w, h = (float(v) for v in bbox)
  except (TypeError, ValueError):
    return None
  return x, y, w, h
