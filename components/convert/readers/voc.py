"""Pascal VOC XML: one `.xml` per image with `<filename>`, `<size>` and `<object><name><bndbox>` in pixels.

Layouts found: VOC's own `Annotations/` + `JPEGImages/` (splits from `ImageSets/Main/{train,val,test}.txt`
when present), Roboflow's `{train,valid,test}/` folders with each `.xml` beside its image, or `.xml`
files anywhere under the root. Classes: the sorted names found (or `--classes`).
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from components.convert.readers.common import join_rel, rel, split_dirs
from components.convert.rows import Issue, Obj, Row, Source


def _xml_files(root: str) -> list[tuple[str, str | None]]:
  """-> [(xml path relative to the root, split or None)]."""
  nested = split_dirs(root)
  if nested:
    return [(rel(os.path.join(dirpath, n), root), split) for split, d in nested.items()
            for dirpath, _, names in sorted(os.walk(os.path.join(root, d))) for n in sorted(names) if n.endswith(".xml")]
  splits = {}
  image_sets = os.path.join(root, "ImageSets", "Main")
  for name in sorted(os.listdir(image_sets)) if os.path.isdir(image_sets) else []:
    split = {"train.txt": "train", "val.txt": "valid", "test.txt": "test"}.get(name)
    if split:
      with open(os.path.join(image_sets, name), encoding="utf-8") as f:
        splits.update({line.split()[0]: split for line in f if line.strip()})
  found = []
  for dirpath, dirnames, names in os.walk(root):
    dirnames.sort()
    found += [rel(os.path.join(dirpath, n), root) for n in sorted(names) if n.endswith(".xml")]
  if splits:
    return [(f, splits[os.path.splitext(os.path.basename(f))[0]]) for f in found
            if os.path.splitext(os.path.basename(f))[0] in splits]
  return [(f, None) for f in found]


def _image_path(root: str, xml_rel: str, filename: str) -> str:
  xml_dir = os.path.dirname(xml_rel)
  candidates = [join_rel(xml_dir, filename), join_rel(os.path.dirname(xml_dir), "JPEGImages", filename),
                join_rel("JPEGImages", filename), join_rel("images", filename)]
  for candidate in candidates:
    if os.path.isfile(os.path.join(root, candidate)):
      return candidate
  return candidates[0]


def read(path: str, task: str, **_) -> Source:
  if task != "detect":
    raise ValueError(f"VOC input holds boxes: use --task detect, not {task!r}")
  root = path
  files = _xml_files(root)
  if not files:
    raise FileNotFoundError(f"no .xml annotation files under {root}; is it a Pascal VOC dataset?")
  rows, issues, names = [], [], set()
  for xml_rel, split in files:
    try:
      tree = ET.parse(os.path.join(root, xml_rel)).getroot()
    except ET.ParseError as e:
      issues.append(Issue(xml_rel, 0, f"not valid XML ({e}); fix or re-export it"))
      continue
    filename = (tree.findtext("filename") or "").strip()
    if not filename:
      issues.append(Issue(xml_rel, 0, "has no <filename>; add the image file name"))
      continue
    size = tree.find("size")
    declared = None
    if size is not None:
      try:
        declared = (int(float(size.findtext("width"))), int(float(size.findtext("height"))))
      except (TypeError, ValueError):
        declared = None
    row = Row(_image_path(root, xml_rel, filename), xml_rel, 0, split, objects=[],
              declared_size=declared if declared and min(declared) > 0 else None)
    for i, obj in enumerate(tree.iter("object"), start=1):
      name, box = (obj.findtext("name") or "").strip(), obj.find("bndbox")
      try:
        coords = tuple(float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
      except (AttributeError, TypeError, ValueError):
        row.repairs.append(f"object {i} ({name!r}) dropped: <bndbox> needs numeric xmin, ymin, xmax, ymax")
        continue
      row.objects.append(Obj(name, coords))
      names.add(name)
    rows.append(row)
  return Source(root=root, rows=rows, classes=sorted(names) or None, issues=issues)
