"""YOLO (Ultralytics / Darknet / Roboflow YOLOv5-v11 exports): one `class cx cy w h` line per box, normalised.

Layouts found: `{train,valid,test}/{images,labels}/` (Roboflow), `{images,labels}/{train,val,test}/`
(Ultralytics), or plain `images/` + `labels/`. Class names come from `data.yaml` (`names` as a list or
an {id: name} map), `classes.txt` or `obj.names`. A line with more than 5 numbers is a segmentation
polygon: its bounding box is used (YOLO-seg). With `--task segment` the polygons are the instance masks
(`class x1 y1 x2 y2 ...`, normalised); a plain box line cannot be segmented and is dropped as a repair.
An image without a label file is an example with no objects (segmentation: nothing to segment, rejected).
"""
from __future__ import annotations

import collections
import os

import yaml

from components.convert.masks import polygon_problem
from components.convert.readers.common import join_rel, list_images, split_dirs
from components.convert.rows import Issue, Mask, Obj, Row, Source


def _class_names(root: str) -> list[str]:
  for name in ("data.yaml", "dataset.yaml", "data.yml"):
    path = os.path.join(root, name)
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        names = (yaml.safe_load(f) or {}).get("names")
      if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
      if isinstance(names, list):
        return [str(n) for n in names]
      raise ValueError(f"{path} has no 'names' list or map; add the class names")
  for name in ("classes.txt", "obj.names", "classes.names"):
    path = os.path.join(root, name)
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]
  raise FileNotFoundError(f"no data.yaml, classes.txt or obj.names in {root}; YOLO labels need the class names")


def _pairs(root: str) -> list[tuple[str, str, str | None]]:
  """-> [(images folder, labels folder, split)] relative to the root."""
  nested = split_dirs(root, "images")
  if nested:
    return [(f"{d}/images", f"{d}/labels", s) for s, d in nested.items()]
  if os.path.isdir(os.path.join(root, "images")):
    inner = split_dirs(os.path.join(root, "images"))
    if inner:
      return [(f"images/{d}", f"labels/{d}", s) for s, d in inner.items()]
    return [("images", "labels", None)]
  raise FileNotFoundError(f"no images/ folder in {root} (nor train/images/, ...); is it a YOLO dataset?")


def read(path: str, task: str, **_) -> Source:
  if task not in ("detect", "segment"):
    raise ValueError(f"YOLO input holds boxes and polygons: use --task detect or segment, not {task!r}")
  root = path
  names = _class_names(root)
  rows, issues = [], []
  for images_dir, labels_dir, split in _pairs(root):
    images = list_images(os.path.join(root, images_dir))
    by_stem = collections.defaultdict(list)  # a.jpg and a.png would both read labels/a.txt
    for image in images:
      by_stem[os.path.splitext(image)[0]].append(image)
    stems = set(by_stem)
    for image in images:
      stem = os.path.splitext(image)[0]
      label = f"{labels_dir}/{stem}.txt"
      has_label = os.path.isfile(os.path.join(root, label))
      if has_label and len(by_stem[stem]) > 1:
        others = ", ".join(by_stem[stem])
        issues.append(Issue(label, 0, f"images {others} share this label file, which belongs to one of them only; "
                                      "rename the others (YOLO pairs an image and its labels by name)",
                            image=join_rel(images_dir, image)))
        continue
      row = Row(join_rel(images_dir, image), label, 0, split,
                **({"masks": []} if task == "segment" else {"objects": []}))
      if has_label:
        _read_labels(os.path.join(root, label), names, row)
      else:
        row.file = join_rel(images_dir, image)
      rows.append(row)
    labels_path = os.path.join(root, labels_dir)
    for dirpath, _, filenames in os.walk(labels_path):
      for name in sorted(filenames):
        stem = os.path.relpath(os.path.join(dirpath, os.path.splitext(name)[0]), labels_path).replace(os.sep, "/")
        if name.endswith(".txt") and stem not in stems:
          issues.append(Issue(f"{labels_dir}/{stem}.txt", 0, f"label file has no image in {images_dir}/; add the "
                                                             "image or delete the label file"))
  return Source(root=root, rows=rows, classes=names, issues=issues)


def _read_labels(path: str, names: list[str], row: Row) -> None:
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      fields = line.split()
      if not fields:
        continue
      try:
        class_id, values = int(float(fields[0])), [float(v) for v in fields[1:]]
      except ValueError:
        row.repairs.append(f"line {number} dropped: {line.strip()[:60]!r} is not 'class cx cy w h'")
        continue
      if not 0 <= class_id < len(names):
        row.repairs.append(f"line {number} dropped: class {class_id} is not in the {len(names)} class names")
        continue
      if row.masks is not None:
        if len(values) == 4:
          row.repairs.append(f"line {number} dropped: a box (class cx cy w h), not a polygon; --task segment needs "
                             "YOLO-seg polygon labels")
        elif (problem := polygon_problem(values)) is not None:
          row.repairs.append(f"line {number} dropped: {problem}")
        else:
          row.masks.append(Mask(names[class_id], "polygons", [values], f"line {number}", normalized=True))
        continue
      if len(values) == 4:
        cx, cy, w, h = values
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
      elif len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        box = (min(xs), min(ys), max(xs), max(ys))
      else:
        row.repairs.append(f"line {number} dropped: expected 4 box values or a polygon, got {len(values)} numbers")
        continue
      row.objects.append(Obj(names[class_id], box, normalized=True))
